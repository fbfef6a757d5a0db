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

import click
import numpy as np

from cli.options import client_options, open_channel, run_options
from services.core.validation import DEFAULT_SEED
from services.wiring import ModelOptions, build_services, close_all, service_named, set_threads


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
@click.option("--voice", default="", help="Voice name (see the server's ListVoices).")
@click.option("--voices", "--voices-dir", "voices_dir",
              type=click.Path(exists=True, file_okay=False),
              help="In-process: the voices folder (e.g. a kyutai/tts-voices download).")
@click.option("--hf-repo", help="Kyutai TTS repository (e.g. kyutai/tts-1.6b-en_fr), or any "
              "Moshi-architecture LM's (TTS by delaying its audio, as `serve` does).")
@click.option("--checkpoint", "--lm-checkpoint", "checkpoint", type=click.Path(exists=True),
              help="Local checkpoint folder (config.json + weights), as --hf-repo.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=DEFAULT_SEED,
              show_default=True, help="Sampling seed (the same seed and text give the same "
              "audio).")
@click.option("--temperature", type=float, help="Audio and text temperature (0: greedy).")
@click.option("--num-codebooks", type=int, default=0, help="Codebooks to generate (0: all).")
@click.option("--tts-audio-delay", type=click.IntRange(1), default=None,
              help="Moshi-architecture LM: frames (80 ms each) the audio lags the text "
              "(default 25, as `serve`).")
@run_options
@client_options
def tts(text, output, voice, voices_dir, hf_repo, checkpoint, seed, temperature,
        num_codebooks, tts_audio_delay, device, dtype, threads, quantize, server, token, tls,
        ca_cert) -> None:
    """Speak TEXT ("-": read it from standard input as it comes) into OUTPUT. Without a
    checkpoint the built-in tiny random LM runs, the same one `serve` runs."""
    from services.core.audio import write_wav
    from services.core.common_pb2 import PCM_F32LE, SamplingParams
    from services.tts import tts_pb2

    sampling = SamplingParams() if temperature is None else SamplingParams(
        temperature=temperature)
    config = tts_pb2.SynthesisConfig(voice=voice, encoding=PCM_F32LE, seed=seed,
                                     num_codebooks=num_codebooks, text_sampling=sampling,
                                     audio_sampling=sampling)
    owned = []
    if server is None:
        set_threads(threads)
        options = ModelOptions(hf_repo=hf_repo, lm_checkpoint=checkpoint, device=device,
                               dtype=dtype, quantize=quantize, max_sessions=1,
                               voices_dir=voices_dir,
                               **({} if tts_audio_delay is None
                                  else {"tts_audio_delay": tts_audio_delay}))
        owned = build_services(["tts"], options)
        chunks = _in_process(service_named(owned, "tts"), config, text)
    else:
        chunks = _remote(open_channel(server, tls, ca_cert), token, config, text)
    audio = []
    try:
        for pcm, words in chunks:
            audio.append(pcm)
            for word, start in words:
                click.echo(f"{start:7.2f} {word}")
    finally:
        close_all(owned)
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
            session.send(chunk)
        session.finish()

    threading.Thread(target=feed, name="tts-feed", daemon=True).start()
    for chunk in session:
        if chunk is None:
            continue
        if chunk.waiting_for_text:
            click.echo("(waiting for text)", err=True)
        yield chunk.audio, [(w.text, w.start) for w in chunk.words]


def _remote(channel, token: str | None, config, text: str):
    from services.core.grpc_client import bearer_metadata
    from services.tts import tts_pb2, tts_pb2_grpc

    stub = tts_pb2_grpc.SpeechSynthesisStub(channel)

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=config)
        for chunk in _text_chunks(text):
            yield tts_pb2.StreamingSynthesizeRequest(text=chunk)
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    for chunk in stub.StreamingSynthesize(requests(), metadata=bearer_metadata(token)):
        yield (np.frombuffer(chunk.audio, dtype="<f4"),
               [(w.text, w.start_seconds) for w in chunk.words])
