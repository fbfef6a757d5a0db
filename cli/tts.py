"""``moshi-services tts``: text to speech.

    moshi-services tts "Hello there." -o hello.wav --hf-repo kyutai/tts-1.6b-en_fr \\
        --voices ~/tts-voices --voice expresso/ex03-ex01_happy_001_channel1_334s.wav
    llm ... | moshi-services tts - -o reply.wav --server localhost:50051   # text streamed in

Writes a 24 kHz wav and prints each word with its start time in the audio.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import torch

from services.core.audio import write_wav
from services.core.checkpoint import resolve_file
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.core.grpc_client import bearer_metadata
from services.core.grpc_server import create_channel
from services.mimi.loading import build_random_mimi, load_mimi
from services.mimi.service import MimiService
from services.tts.conditioning import list_voices, load_voice, resolve_voice
from services.tts.loading import build_random_tts, load_tts
from services.tts.service import TTSService

BUILTIN_SEED = 0


def build_tts_service(checkpoint: str | None, hf_repo: str | None, codec=None,
                      voices_dir: str | None = None, max_sessions: int = 8, device: str = "cpu",
                      dtype: torch.dtype = torch.float32, idle_timeout: float = 30.0):
    """(TTSService, its own Mimi service or None when ``codec`` is given) from a Kyutai TTS
    checkpoint folder / repository, else the built-in tiny random TTS model. The first voice
    of ``voices_dir`` is the default voice."""
    if checkpoint is None and hf_repo is None:
        click.echo("warning: no TTS checkpoint given, using a built-in tiny random model: its "
                   "audio is noise (use --hf-repo kyutai/tts-1.6b-en_fr)", err=True)
        bundle, voice = build_random_tts(BUILTIN_SEED, device)
    else:
        bundle = load_tts(checkpoint, hf_repo, device=device, dtype=dtype)
        voices = list_voices(voices_dir) if voices_dir else []
        voice = load_voice(resolve_voice(voices_dir, voices[0])) if voices else None
    own_codec = None
    if codec is None:
        mimi = _load_mimi(bundle.model.cfg, checkpoint, hf_repo, device)
        codec = own_codec = MimiService.create(mimi, max_sessions, idle_timeout)
    service = TTSService.create(bundle, codec, max_sessions, voices_dir, voice,
                                voice_length=None if voice is None else voice.shape[-1],
                                idle_timeout=idle_timeout)
    return service, own_codec


def _load_mimi(cfg, checkpoint: str | None, hf_repo: str | None, device: str):
    """The codec named by the checkpoint's config, or the built-in random one."""
    if checkpoint is None and hf_repo is None:
        return build_random_mimi(seed=BUILTIN_SEED, device=device, num_codebooks=cfg.dep_q)
    folder = Path(checkpoint).parent if checkpoint and Path(checkpoint).is_file() \
        else checkpoint
    return load_mimi(resolve_file(cfg.mimi_name, folder, hf_repo), device=device,
                     num_codebooks=cfg.dep_q)


def _text_chunks(text: str) -> Iterator[str]:
    """TEXT, or standard input line by line when TEXT is "-"."""
    if text != "-":
        yield text
        return
    yield from sys.stdin  # line by line, as the lines come


@click.command()
@click.argument("text")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="tts.wav",
              show_default=True, help="The audio (24 kHz wav).")
@click.option("--server", help="TTS service address; omitted: the model in this process.")
@click.option("--voice", default="", help="Voice name (see the server's ListVoices).")
@click.option("--voices", "voices_dir", type=click.Path(exists=True, file_okay=False),
              help="In-process: the voices folder (e.g. a kyutai/tts-voices download).")
@click.option("--hf-repo", help="Kyutai TTS repository (e.g. kyutai/tts-1.6b-en_fr).")
@click.option("--checkpoint", type=click.Path(exists=True), help="Local TTS checkpoint folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, help="Audio and text temperature (0: greedy).")
@click.option("--num-codebooks", type=int, default=0, help="Codebooks to generate (0: all).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--token", envvar="MOSHI_SERVICES_TOKEN", help="Bearer token of the server.")
def tts(text, output, server, voice, voices_dir, hf_repo, checkpoint, seed, temperature,
        num_codebooks, device, token) -> None:
    """Speak TEXT ("-": read it from standard input as it comes) into OUTPUT."""
    from services.tts import tts_pb2

    sampling = SamplingParams() if temperature is None else SamplingParams(
        temperature=temperature)
    config = tts_pb2.SynthesisConfig(voice=voice, encoding=PCM_F32LE, seed=seed,
                                     num_codebooks=num_codebooks, text_sampling=sampling,
                                     audio_sampling=sampling)
    owned = []
    if server is None:
        service, codec = build_tts_service(checkpoint, hf_repo, voices_dir=voices_dir,
                                           max_sessions=1, device=device)
        owned = [service] + ([codec] if codec else [])
        chunks = _in_process(service, config, text)
    else:
        chunks = _remote(server, token, config, text)
    audio = []
    try:
        for pcm, words in chunks:
            audio.append(pcm)
            for word, start in words:
                click.echo(f"{start:7.2f} {word}")
    finally:
        for service in owned:
            service.close()
    write_wav(output, np.concatenate(audio) if audio else np.zeros(0, np.float32))
    click.echo(f"wrote {output}", err=True)


def _in_process(service, config, text: str):
    from services.core.grpc_stream import CLIENT_ERRORS

    try:
        session = service.open(config)
    except CLIENT_ERRORS as error:
        raise click.UsageError(str(error)) from None

    def feed():
        for chunk in _text_chunks(text):
            session.push_text(chunk)
        session.end_text()

    threading.Thread(target=feed, name="tts-feed", daemon=True).start()
    for chunk in session:
        if chunk.waiting_for_text:
            click.echo("(waiting for text)", err=True)
        yield chunk.audio, [(w.text, w.start) for w in chunk.words]


def _remote(server: str, token: str | None, config, text: str):
    from services.tts import tts_pb2, tts_pb2_grpc

    stub = tts_pb2_grpc.SpeechSynthesisStub(create_channel(server))

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=config)
        for chunk in _text_chunks(text):
            yield tts_pb2.StreamingSynthesizeRequest(text=chunk)
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    for chunk in stub.StreamingSynthesize(requests(), metadata=bearer_metadata(token)):
        yield (np.frombuffer(chunk.audio, dtype="<f4"),
               [(w.text, w.start_seconds) for w in chunk.words])
