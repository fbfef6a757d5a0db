"""``mimi encode/decode --server ADDR``: the same files, the codec running in a Mimi service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import numpy as np

    from services.mimi.codes_file import CodesFile


def read_input_audio(path: str, rate: int) -> np.ndarray:
    """The audio of ``path`` as float32 mono at ``rate``; ClickException if unreadable."""
    import soundfile

    from services.core.audio import read_audio

    try:
        return read_audio(path, rate)[0]
    except (soundfile.LibsndfileError, OSError) as e:
        raise click.ClickException(f"cannot read audio {path}: {e}") from None


def read_codes(path: str) -> CodesFile:
    from services.mimi.codes_file import CodesFileError, load_codes

    try:
        return load_codes(path)
    except CodesFileError as e:
        raise click.ClickException(str(e)) from None


def note_defaults(path: str, codes_file: CodesFile, model: str) -> None:
    """Says on stderr which metadata the codes file lacked, and a codec mismatch."""
    from services.mimi.codes_file import UNKNOWN_MODEL

    if codes_file.defaulted:
        click.echo(f"note: {path} has no {', '.join(codes_file.defaulted)} metadata: "
                   f"assuming {codes_file.sample_rate} Hz, {codes_file.frame_rate:g} frames/s, "
                   f"{codes_file.num_samples} samples", err=True)
    if codes_file.model not in (model, UNKNOWN_MODEL):
        click.echo(f"warning: {path} was made by {codes_file.model!r}, decoding with "
                   f"{model!r}", err=True)


def remote_encode(input_path: str, output_path: str, num_codebooks: int, server: str,
                  channel, token: str | None) -> None:
    """``server``: the address ``channel`` leads to (for messages)."""
    import grpc
    import torch

    from services.core.constants import SAMPLE_RATE
    from services.core.engine import EngineError
    from services.mimi.client import RemoteMimi
    from services.mimi.codes_file import save_codes

    audio = read_input_audio(input_path, SAMPLE_RATE)  # before any call: fail early
    try:
        client = RemoteMimi(channel, token)
        info = client.info()
        if info.sample_rate_hertz != SAMPLE_RATE:
            audio = read_input_audio(input_path, info.sample_rate_hertz)
        codes = torch.from_numpy(client.encode(audio, info.sample_rate_hertz, num_codebooks))
    except (grpc.RpcError, EngineError) as e:
        raise click.ClickException(_message(e, server)) from None
    save_codes(output_path, codes, num_samples=len(audio), model=info.model,
               sample_rate=info.sample_rate_hertz, frame_rate=info.frame_rate_hertz)
    click.echo(f"{input_path}: {len(audio) / info.sample_rate_hertz:.2f} s -> "
               f"{codes.shape[1]} frames x {codes.shape[0]} codebooks -> {output_path} "
               f"(via {server})", err=True)


def remote_decode(input_path: str, output_path: str, server: str, channel,
                  token: str | None) -> None:
    import grpc

    from services.core.audio import write_wav
    from services.core.engine import EngineError
    from services.mimi.client import RemoteMimi

    codes_file = read_codes(input_path)
    try:
        client = RemoteMimi(channel, token)
        info = client.info()
        audio = client.decode(codes_file.codes.numpy())
    except (grpc.RpcError, EngineError) as e:
        raise click.ClickException(_message(e, server)) from None
    note_defaults(input_path, codes_file, info.model)
    write_wav(output_path, audio[: codes_file.num_samples], info.sample_rate_hertz)
    click.echo(f"{input_path}: {codes_file.num_frames} frames -> {output_path} "
               f"(via {server})", err=True)


def _message(error: Exception, server: str) -> str:
    import grpc

    from cli.errors import rpc_message

    return rpc_message(error, server) if isinstance(error, grpc.RpcError) \
        else f"{server}: {error}"
