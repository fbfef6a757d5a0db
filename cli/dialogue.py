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

import click
import numpy as np

from cli.serve import ModelOptions, build_services, model_options
from services.core.audio import read_audio, write_wav
from services.core.common_pb2 import SamplingParams
from services.core.constants import FRAME_SIZE, SAMPLE_RATE
from services.core.grpc_client import bearer_metadata
from services.core.grpc_server import create_channel
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.client import Conversation, converse, remote_dialogue

HEADPHONES = ("Use headphones: Moshi hears everything the microphone picks up, its own voice "
              "from the speakers included.")


def _open_session(server, token, tls, ca_cert, options: ModelOptions, config):
    """(session factory, model delay): a remote Converse call, or the in-process pipeline."""
    if server is None:
        services = build_services(["dialogue"], options)
        dialogue = services[-1]
        return (lambda: dialogue.open(config)), dialogue.lm.info().max_delay, services
    root = Path(ca_cert).read_bytes() if ca_cert else None
    stub = dialogue_pb2_grpc.DialogueStub(create_channel(server, root, tls=tls))
    metadata = bearer_metadata(token)
    delay = stub.GetInfo(dialogue_pb2.GetInfoRequest(), metadata=metadata).model_delay_frames
    return (lambda: remote_dialogue(stub, config, metadata)), delay, []


@click.command()
@click.argument("audio_in", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="reply.wav",
              show_default=True, help="Moshi's reply (24 kHz wav).")
@click.option("--transcript", type=click.Path(dir_okay=False),
              help="Text with times (default: OUTPUT with .txt).")
@click.option("--server", help="Dialogue service address; omitted: models in this process.")
@click.option("--fast", is_flag=True, help="Send the audio as fast as the server takes it "
              "instead of in real time.")
@click.option("--mic", is_flag=True, help="Talk through the microphone and hear Moshi "
              "(needs the sounddevice package); Ctrl-C ends.")
@click.option("--seed", type=int, help="Seed of Moshi's sampling (default: random).")
@click.option("--temperature", type=float, help="Audio sampling temperature (0: greedy).")
@click.option("--text-temperature", type=float, help="Text sampling temperature (0: greedy).")
@click.option("--token", envvar="MOSHI_SERVICES_TOKEN", help="Bearer token of the server.")
@click.option("--tls", is_flag=True, help="Connect with TLS (system roots).")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM root certificate for TLS (implies --tls).")
@model_options
def dialogue(audio_in, output, transcript, server, fast, mic, seed, temperature,
             text_temperature, token, tls, ca_cert, hf_repo, mimi_checkpoint, lm_checkpoint,
             device, dtype, threads) -> None:
    """Stream AUDIO_IN (any format and rate) to Moshi; write its reply and transcript."""
    if (audio_in is None) == (not mic):
        raise click.UsageError("give an input audio file, or --mic")
    sounddevice = _sounddevice() if mic else None
    if threads:
        import torch

        torch.set_num_threads(threads)
    config = dialogue_pb2.DialogueConfig(
        text_sampling=SamplingParams(**_temperature(text_temperature)),
        audio_sampling=SamplingParams(**_temperature(temperature)),
        **({} if seed is None else {"seed": seed}))
    options = ModelOptions(hf_repo, mimi_checkpoint, lm_checkpoint, device, dtype,
                           max_sessions=1)
    open_session, delay, services = _open_session(server, token, tls, ca_cert, options,
                                                  config)
    try:
        if mic:
            _talk(open_session(), sounddevice)
            return
        audio, _ = read_audio(audio_in)
        conversation = converse(open_session(), audio, delay, realtime=not fast,
                                on_frame=lambda f: f.text and click.echo(f.text, nl=False))
        click.echo()
        _write(conversation, Path(output),
               Path(transcript) if transcript else Path(output).with_suffix(".txt"))
    finally:
        for service in services:
            service.close()


def _temperature(value: float | None) -> dict:
    return {} if value is None else {"temperature": value}


def _write(conversation: Conversation, output: Path, transcript: Path) -> None:
    write_wav(output, conversation.audio)
    transcript.write_text("".join(f"{t:8.2f}\t{text}\n" for t, text
                                  in conversation.transcript()), encoding="utf-8")
    latency = conversation.latencies_ms()
    summary = f"wrote {output} ({len(conversation.frames)} frames) and {transcript}"
    if len(latency):
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
