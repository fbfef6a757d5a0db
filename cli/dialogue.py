"""``moshi-services dialogue``: talk to Moshi, full duplex.

    moshi-services dialogue question.wav -o reply.wav --server localhost:50051
    moshi-services dialogue question.wav --fast          # in-process models, no pacing
    moshi-services dialogue --mic --server localhost:50051   # needs `pip install sounddevice`

The user's audio is streamed 80 ms at a time (in real time unless --fast) while Moshi's frames
come back; the reply is written as a 24 kHz wav and its text, with the time of each piece in
the reply, as a transcript next to it.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.errors import Command
from cli.files import check_audio_output, check_output
from cli.mimi_remote import read_input_audio
from cli.options import client_options, model_options, open_channel
from cli.progress import LiveStatus
from services.wiring import ModelOptions, build_services, close_all, service_named, set_threads

if TYPE_CHECKING:
    from services.dialogue.client import Conversation

HEADPHONES = ("Use headphones: Moshi hears everything the microphone picks up, its own voice "
              "from the speakers included.")


def _open_session(server, token, tls, ca_cert, options: ModelOptions, config):
    """(session factory, model delay): a remote Converse call, or the in-process pipeline."""
    from services.core.grpc_client import bearer_metadata
    from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
    from services.dialogue.client import remote_dialogue

    if server is None:
        services = build_services(["dialogue"], options)
        dialogue = service_named(services, "dialogue")
        return (lambda: dialogue.open(config)), dialogue.lm.info().max_delay, services
    stub = dialogue_pb2_grpc.DialogueStub(open_channel(server, tls, ca_cert))
    metadata = bearer_metadata(token)
    delay = stub.GetInfo(dialogue_pb2.GetInfoRequest(), metadata=metadata).model_delay_frames
    return (lambda: remote_dialogue(stub, config, metadata)), delay, []


@click.command(cls=Command)
@click.argument("audio_in", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="reply.wav",
              show_default=True, help="Moshi's reply (24 kHz wav).")
@click.option("--transcript", type=click.Path(dir_okay=False),
              help="Text with times (default: OUTPUT with .txt).")
@click.option("--fast", is_flag=True, help="Send the audio as fast as the server takes it "
              "instead of in real time.")
@click.option("--mic", is_flag=True, help="Talk through the microphone and hear Moshi "
              "(needs the sounddevice package); Ctrl-C ends.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Seed of Moshi's sampling (default 0: the same input gives the same "
              "reply).")
@click.option("--temperature", type=float, help="Audio sampling temperature (0: greedy).")
@click.option("--text-temperature", type=float, help="Text sampling temperature (0: greedy).")
@client_options
@model_options
def dialogue(audio_in, output, transcript, fast, mic, seed, temperature, text_temperature,
             server, token, tls, ca_cert, hf_repo, mimi_checkpoint, lm_checkpoint, device,
             dtype, threads, quantize, kv_dtype) -> None:
    """Stream AUDIO_IN (any format and rate) to Moshi; write its reply and transcript."""
    if (audio_in is None) == (not mic):
        raise click.UsageError("give an input audio file, or --mic")
    sounddevice = _sounddevice() if mic else None
    from services.core.common_pb2 import SamplingParams
    from services.core.constants import SAMPLE_RATE
    from services.dialogue import dialogue_pb2

    # Inputs read and outputs checked before any model loads: a bad path fails at once, not
    # after a whole real-time dialogue.
    audio = None if mic else read_input_audio(audio_in, SAMPLE_RATE)
    transcript = transcript or str(Path(output).with_suffix(".txt"))
    if not mic:
        check_audio_output(output, "'-o' / '--output'")
        check_output(transcript, "'--transcript'")
    set_threads(threads)
    config = dialogue_pb2.DialogueConfig(
        text_sampling=SamplingParams(**_temperature(text_temperature)),
        audio_sampling=SamplingParams(**_temperature(temperature)),
        **({} if seed is None else {"seed": seed}))
    options = ModelOptions(hf_repo=hf_repo, mimi_checkpoint=mimi_checkpoint,
                           lm_checkpoint=lm_checkpoint, device=device, dtype=dtype,
                           quantize=quantize, kv_dtype=kv_dtype, max_sessions=1)
    open_session, delay, services = _open_session(server, token, tls, ca_cert, options,
                                                  config)
    try:
        if mic:
            _talk(open_session(), sounddevice)
            return
        conversation, seconds = _converse(open_session(), audio, delay, fast)
        _write(conversation, Path(output), Path(transcript), seconds if fast else None)
    finally:
        close_all(services)


def _converse(session, audio, delay: int, fast: bool) -> tuple[Conversation, float]:
    """(the conversation, its wall-clock seconds). Moshi's text goes to stdout as it comes;
    on a terminal a status line on stderr shows the time, the round trip and the text."""
    import time

    from services.core.constants import FRAME_SIZE, SAMPLE_RATE
    from services.dialogue.client import converse

    status, text, start = LiveStatus(), [], time.monotonic()
    total = len(audio) / SAMPLE_RATE
    frame_seconds = FRAME_SIZE / SAMPLE_RATE

    def on_frame(frame) -> None:
        text.append(frame.text)
        if not status.enabled:
            if frame.text:
                click.echo(frame.text, nl=False)
            return
        wall = time.monotonic() - start
        line = f"{(frame.index + 1) * frame_seconds:6.1f} / {total:.1f} s"
        if not fast:  # since the user frame this reply needed was complete
            needed = (frame.index + 1 + delay) * frame_seconds
            line += f" | round trip {1000 * (wall - needed):4.0f} ms"
        status.update(f"{line} | {''.join(text)[-60:]}")

    try:
        conversation = converse(session, audio, delay, realtime=not fast, on_frame=on_frame)
    finally:
        status.close()
    click.echo("".join(text) if status.enabled else "")
    return conversation, time.monotonic() - start


def _temperature(value: float | None) -> dict:
    return {} if value is None else {"temperature": value}


def _write(conversation: Conversation, output: Path, transcript: Path,
           fast_seconds: float | None) -> None:
    """The reply and its transcript, and a closing line: the frame round trip in real time;
    with --fast (no pacing, so no meaningful latency) the throughput."""
    import numpy as np

    from services.core.audio import write_wav
    from services.core.constants import SAMPLE_RATE

    write_wav(output, conversation.audio)
    transcript.write_text("".join(f"{t:8.2f}\t{text}\n" for t, text
                                  in conversation.transcript()), encoding="utf-8")
    latency = conversation.latencies_ms()
    summary = f"wrote {output} ({len(conversation.frames)} frames) and {transcript}"
    seconds = len(conversation.audio) / SAMPLE_RATE
    if fast_seconds is not None and seconds and fast_seconds:
        summary += (f"; --fast: {seconds:.1f} s of reply in {fast_seconds:.1f} s, "
                    f"{seconds / fast_seconds:.1f}x real time (RTF {fast_seconds / seconds:.2f})")
    elif len(latency):
        summary += (f"; frame round trip p50 {np.percentile(latency, 50):.1f} ms, "
                    f"p99 {np.percentile(latency, 99):.1f} ms")
    click.echo(summary, err=True)


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise click.UsageError("--mic needs the sounddevice package: "
                               "pip install 'moshi-services[audio]'") from None
    return sounddevice


def _talk(session, sounddevice) -> None:
    """Microphone -> Moshi -> speakers until Ctrl-C."""
    from services.core.constants import FRAME_SIZE, SAMPLE_RATE

    click.echo(HEADPHONES, err=True)
    playback: queue.Queue = queue.Queue()

    def record(block, frames, time, status):
        session.send(block[:, 0].copy())

    def play(out, frames, time, status):
        try:
            out[:, 0] = playback.get_nowait()
        except queue.Empty:  # nothing from Moshi yet: silence rather than a stall
            out.fill(0)

    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                 blocksize=FRAME_SIZE, callback=record), \
            sounddevice.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                     blocksize=FRAME_SIZE, callback=play):
        try:
            for frame in session:
                playback.put(frame.audio)
                if frame.text:
                    click.echo(frame.text, nl=False)
        except KeyboardInterrupt:
            click.echo()
        finally:
            session.close()
