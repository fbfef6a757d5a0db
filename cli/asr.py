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
from typing import TYPE_CHECKING

import click

from cli.errors import Command
from cli.mimi_remote import read_input_audio
from cli.options import client_options, open_channel, run_options
from cli.progress import LiveStatus
from services.wiring import ModelOptions, build_services, close_all, service_named, set_threads

if TYPE_CHECKING:
    import numpy as np

CHUNK_FRAMES = 4  # frames per audio message sent to a server (320 ms)


def _events_in_process(service, audio: np.ndarray, config) -> Iterator[dict]:
    """Events of an in-process session, printed as they come (a thread feeds the audio)."""
    call = service.open(config)
    session = call.session
    frames = [*call.frames(audio.astype("<f4").tobytes()), *call.last_frames()]

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


def _events_remote(channel, token: str | None, audio: np.ndarray, config) -> Iterator[dict]:
    from services.asr import asr_pb2, asr_pb2_grpc
    from services.core.constants import FRAME_SIZE
    from services.core.grpc_client import bearer_metadata

    stub = asr_pb2_grpc.SpeechRecognitionStub(channel)

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


@click.command(cls=Command)
@click.argument("audio_in", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--interim", is_flag=True, help="Also print words before they are final.")
@click.option("--hf-repo", help="Kyutai STT repository (e.g. kyutai/stt-1b-en_fr), or any "
              "Moshi-architecture LM's (ASR by delaying its text, as `serve` does).")
@click.option("--checkpoint", "--lm-checkpoint", "checkpoint", type=click.Path(exists=True),
              help="Local checkpoint folder (config.json + weights), as --hf-repo.")
@click.option("--asr-text-delay", type=click.IntRange(1), default=None,
              help="Moshi-architecture LM: frames (80 ms each) the text lags the audio "
              "(default 25, as `serve`).")
@run_options
@client_options
def asr(audio_in, as_json, interim, hf_repo, checkpoint, asr_text_delay, device, dtype,
        threads, quantize, kv_dtype, server, token, tls, ca_cert) -> None:
    """Transcribe AUDIO_IN (any format and rate), printing words as they come. Without a
    checkpoint the built-in tiny random LM runs, the same one `serve` runs."""
    from services.asr import asr_pb2
    from services.core.common_pb2 import PCM_F32LE
    from services.core.constants import SAMPLE_RATE

    audio = read_input_audio(audio_in, SAMPLE_RATE)  # before any model loads: fail early
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=SAMPLE_RATE,
                                       interim_results=interim)
    owned = []
    if server is None:
        set_threads(threads)
        options = ModelOptions(hf_repo=hf_repo, lm_checkpoint=checkpoint, device=device,
                               dtype=dtype, quantize=quantize, kv_dtype=kv_dtype, max_sessions=1,
                               **({} if asr_text_delay is None
                                  else {"asr_text_delay": asr_text_delay}))
        owned = build_services(["asr"], options)
        events = _events_in_process(service_named(owned, "asr"), audio, config)
    else:
        events = _events_remote(open_channel(server, tls, ca_cert), token, audio, config)
    # On a terminal: how far into the audio the words are, on a status line of stderr.
    status, total = LiveStatus(), len(audio) / SAMPLE_RATE
    try:
        for event in events:
            if as_json:
                status.echo(json.dumps(event))
            elif "word" in event and (event["final"] or interim):
                end = f"{event['end']:7.2f}" if event["end"] is not None else "      ?"
                status.echo(f"{event['start']:7.2f} {end} {event['word']}")
            if "word" in event:
                status.update(f"recognised up to {event['start']:.1f} of {total:.1f} s")
    finally:
        status.close()
        close_all(owned)
