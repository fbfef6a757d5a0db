"""``moshi-services asr``: speech to text with word times.

    moshi-services asr speech.wav --hf-repo kyutai/stt-1b-en_fr     # in this process
    moshi-services asr speech.wav --server localhost:50051 --json    # an ASR service

Words are printed as they become final ("start end word", seconds of the input); ``--json``
prints one JSON object per event (words, interim words, speech events) instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import torch

from services.asr.service import ASRService
from services.core.audio import read_audio
from services.core.checkpoint import resolve_file
from services.core.common_pb2 import PCM_F32LE
from services.core.constants import FRAME_SIZE, SAMPLE_RATE
from services.core.grpc_client import bearer_metadata
from services.core.grpc_server import create_channel
from services.mimi.loading import build_random_mimi, load_mimi
from services.mimi.service import MimiService
from services.moshi_lm.config import LMConfig
from services.moshi_lm.loader import load_config, load_lm, prepare_for_inference
from services.moshi_lm.model import LMModel
from services.moshi_lm.tokenizer import TextTokenizer
from services.tts.loading import ByteTokenizer

BUILTIN_SEED = 0
# The built-in stand-in: Kyutai STT's layout (32 audio codebooks in, text only out), tiny.
BUILTIN_STT = LMConfig(dim=64, num_heads=4, num_layers=2, context=64, text_card=300, n_q=32,
                       dep_q=0, delays=(0,) * 33, stt_config={"audio_delay_seconds": 0.5})
CHUNK_FRAMES = 4  # frames per audio message sent to a server (320 ms)


def build_asr_service(checkpoint: str | None, hf_repo: str | None, codec=None,
                      max_sessions: int = 8, device: str = "cpu",
                      dtype: torch.dtype = torch.float32, idle_timeout: float = 30.0):
    """(ASRService, its own Mimi service or None when ``codec`` is given) from a Kyutai STT
    checkpoint folder / repository, else a built-in tiny random STT-layout model."""
    if checkpoint is None and hf_repo is None:
        click.echo("warning: no STT checkpoint given, using a built-in tiny random model: its "
                   "words are not meaningful (use --hf-repo kyutai/stt-1b-en_fr)", err=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILTIN_SEED)
            model = prepare_for_inference(LMModel(BUILTIN_STT)).to(device)
        decode, name = ByteTokenizer().decode, "builtin-tiny-random-stt"
    else:
        config = load_config(checkpoint, hf_repo)
        model = load_lm(checkpoint, hf_repo, config=config, dtype=dtype, device=device)
        decode = TextTokenizer.for_checkpoint(config, checkpoint, hf_repo).display
        name = str(checkpoint or hf_repo)
    own_codec = None
    if codec is None:
        mimi = _load_mimi(model.cfg, checkpoint, hf_repo, device)
        codec = own_codec = MimiService.create(mimi, max_sessions, idle_timeout)
    service = ASRService.create(model, decode, codec, name, max_sessions,
                                idle_timeout=idle_timeout)
    return service, own_codec


def _load_mimi(cfg: LMConfig, checkpoint: str | None, hf_repo: str | None, device: str):
    """The codec named by the checkpoint's config, or the built-in random one."""
    n = cfg.num_input_codebooks
    if checkpoint is None and hf_repo is None:
        return build_random_mimi(seed=BUILTIN_SEED, device=device, num_codebooks=n)
    folder = Path(checkpoint).parent if checkpoint and Path(checkpoint).is_file() \
        else checkpoint
    return load_mimi(resolve_file(cfg.mimi_name, folder, hf_repo), device=device,
                     num_codebooks=n)


def _events_in_process(service, audio: np.ndarray, config) -> Iterator[dict]:
    """Events of an in-process session, printed as they come (a thread feeds the audio)."""
    session, splitter = service.open(config)
    frames = list(splitter.push(audio.astype("<f4").tobytes())) + service.end_frames(splitter)

    def feed():
        for frame in frames:
            session.send(frame)
        session.finish()

    threading.Thread(target=feed, name="asr-feed", daemon=True).start()
    try:
        for event in session:
            yield _event_dict(event)
    finally:
        session.close()


def _event_dict(event) -> dict:
    if event.word is not None:
        return {"word": event.word.text, "start": event.word.start, "end": event.word.end,
                "final": event.word.is_final}
    if event.speech_started is not None:
        return {"event": "speech_started", "time": event.speech_started}
    if event.end_of_turn is not None:
        return {"event": "end_of_turn", "time": event.end_of_turn}
    if event.pauses is not None:
        return {"pauses": event.pauses}
    return {"marker": event.marker}


def _events_remote(server: str, token: str | None, audio: np.ndarray, config) -> Iterator[dict]:
    from services.asr import asr_pb2, asr_pb2_grpc

    stub = asr_pb2_grpc.SpeechRecognitionStub(create_channel(server))

    def requests():
        yield asr_pb2.StreamingRecognizeRequest(config=config)
        step = CHUNK_FRAMES * FRAME_SIZE
        for start in range(0, len(audio), step):
            yield asr_pb2.StreamingRecognizeRequest(
                audio=audio[start:start + step].astype("<f4").tobytes())

    for response in stub.StreamingRecognize(requests(), metadata=bearer_metadata(token)):
        kind = response.WhichOneof("event")
        if kind == "word":
            w = response.word
            yield {"word": w.text, "start": w.start_seconds,
                   "end": w.end_seconds if w.HasField("end_seconds") else None,
                   "final": w.HasField("end_seconds")}
        elif kind == "speech_event":
            name = asr_pb2.SpeechEvent.Kind.Name(response.speech_event.kind).lower()
            yield {"event": name, "time": response.speech_event.time_seconds}


@click.command()
@click.argument("audio_in", type=click.Path(exists=True, dir_okay=False))
@click.option("--server", help="ASR service address; omitted: the model in this process.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--interim", is_flag=True, help="Also print words before they are final.")
@click.option("--hf-repo", help="Kyutai STT repository (e.g. kyutai/stt-1b-en_fr).")
@click.option("--checkpoint", type=click.Path(exists=True), help="Local STT checkpoint folder.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--token", envvar="MOSHI_SERVICES_TOKEN", help="Bearer token of the server.")
def asr(audio_in, server, as_json, interim, hf_repo, checkpoint, device, token) -> None:
    """Transcribe AUDIO_IN (any format and rate), printing words as they come."""
    from services.asr import asr_pb2

    audio, _ = read_audio(audio_in)
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=SAMPLE_RATE,
                                       interim_results=interim)
    owned = []
    if server is None:
        service, codec = build_asr_service(checkpoint, hf_repo, max_sessions=1, device=device)
        owned = [service] + ([codec] if codec else [])
        events = _events_in_process(service, audio, config)
    else:
        events = _events_remote(server, token, audio, config)
    try:
        for event in events:
            if as_json:
                click.echo(json.dumps(event))
            elif "word" in event and (event["final"] or interim):
                end = f"{event['end']:7.2f}" if event["end"] is not None else "      ?"
                click.echo(f"{event['start']:7.2f} {end} {event['word']}")
    finally:
        for service in owned:
            service.close()
