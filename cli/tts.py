"""``moshi-services tts``: text to speech.

    moshi-services tts "Hello there." -o hello.wav --hf-repo kyutai/tts-1.6b-en_fr \\
        --voices ~/tts-voices --voice expresso/ex03-ex01_happy_001_channel1_334s.wav
    llm ... | moshi-services tts - -o reply.wav --server localhost:50051   # text streamed in

Writes a 24 kHz wav and prints each word with its start time in the audio. With TEXT "-"
the text is read line by line as it arrives; the model speaks a word once it sees the next
ones, so the last words of a burst wait for more text: an empty line (or the end of input)
completes them, and the next line starts a new burst. ``-o -`` writes the audio to standard
output as it is produced (raw 16-bit PCM, 24 kHz mono) and the words to standard error.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator

import click

from cli.errors import Command
from cli.files import STDOUT, check_audio_output
from cli.options import client_options, open_channel, run_options
from cli.progress import LiveStatus
from services.core.validation import DEFAULT_SEED
from services.wiring import ModelOptions, build_services, close_all, service_named, set_threads


def _bursts(text: str) -> Iterator[Iterator[str]]:
    """TEXT as one burst; for "-", standard input's lines as they come, bursts separated by
    empty lines (blank lines before a burst are skipped)."""
    lines = iter(sys.stdin) if text == "-" else iter([text])

    def rest() -> Iterator[str]:
        for line in lines:
            if not line.strip():
                return
            yield line

    for line in lines:
        if line.strip():
            yield itertools.chain([line], rest())


@click.command(cls=Command)
@click.argument("text")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              default="tts.wav", show_default=True,
              help="The audio (24 kHz wav); '-': raw 16-bit PCM to standard output as it is "
              "produced.")
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
        num_codebooks, tts_audio_delay, device, dtype, threads, quantize, kv_dtype, server, token,
        tls, ca_cert) -> None:
    """Speak TEXT ("-": read it from standard input as it comes; an empty line completes
    what came before) into OUTPUT. Without a checkpoint the built-in tiny random LM runs, the
    same one `serve` runs."""
    import numpy as np

    check_audio_output(output, "'-o' / '--output'", allow_stdout=True)

    from services.core.audio import write_wav
    from services.core.common_pb2 import PCM_F32LE, SamplingParams
    from services.core.constants import SAMPLE_RATE
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
                               # 2: a burst's session may still hold its slot while
                               # the next burst's opens
                               dtype=dtype, quantize=quantize, kv_dtype=kv_dtype, max_sessions=2,
                               voices_dir=voices_dir,
                               **({} if tts_audio_delay is None
                                  else {"tts_audio_delay": tts_audio_delay}))
        owned = build_services(["tts"], options)
        service = service_named(owned, "tts")
        synthesize = lambda burst: _in_process(service, config, burst)  # noqa: E731
    else:
        channel = open_channel(server, tls, ca_cert)
        synthesize = lambda burst: _remote(channel, token, config, burst)  # noqa: E731
    to_stdout = output == STDOUT
    audio, offset = [], 0.0  # seconds of audio before the current burst
    status = LiveStatus()  # on a terminal: seconds of audio so far, on stderr
    try:
        for burst in _bursts(text):
            samples = 0
            for pcm, words in synthesize(burst):
                samples += len(pcm)
                if to_stdout:  # as it is produced: a player downstream starts at once
                    # scaled and clipped as the wav writer does, so both outputs agree
                    pcm16 = np.clip(np.round(pcm * 32768), -32768, 32767).astype("<i2")
                    sys.stdout.buffer.write(pcm16.tobytes())
                    sys.stdout.buffer.flush()
                else:
                    audio.append(pcm)
                for word, start in words:
                    status.echo(f"{offset + start:7.2f} {word}", err=to_stdout)
                status.update(f"synthesised {offset + samples / SAMPLE_RATE:.1f} s")
            offset += samples / SAMPLE_RATE
    finally:
        status.close()
        close_all(owned)
    if not to_stdout:
        write_wav(output, np.concatenate(audio) if audio else np.zeros(0, np.float32))
        click.echo(f"wrote {output}", err=True)


def _in_process(service, config, burst: Iterator[str]):
    from services.core.grpc_stream import CLIENT_ERRORS

    try:
        session = service.open(config)
    except CLIENT_ERRORS as error:
        raise click.UsageError(str(error)) from None

    def feed():
        for chunk in burst:
            session.send(chunk)
        session.finish()

    threading.Thread(target=feed, name="tts-feed", daemon=True).start()
    for chunk in session:
        if chunk is None:
            continue
        if chunk.waiting_for_text:
            click.echo("(waiting for text)", err=True)
        yield chunk.audio, [(w.text, w.start) for w in chunk.words]


def _remote(channel, token: str | None, config, burst: Iterator[str]):
    import numpy as np

    from services.core.grpc_client import bearer_metadata
    from services.tts import tts_pb2, tts_pb2_grpc

    stub = tts_pb2_grpc.SpeechSynthesisStub(channel)

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=config)
        for chunk in burst:
            yield tts_pb2.StreamingSynthesizeRequest(text=chunk)
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    for chunk in stub.StreamingSynthesize(requests(), metadata=bearer_metadata(token)):
        yield (np.frombuffer(chunk.audio, dtype="<f4"),
               [(w.text, w.start_seconds) for w in chunk.words])
