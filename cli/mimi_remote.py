"""``mimi encode/decode --server ADDR``: the same files, the codec running in a Mimi service."""

from __future__ import annotations

import click


def remote_encode(input_path: str, output_path: str, num_codebooks: int, server: str,
                  channel, token: str | None) -> None:
    """``server``: the address ``channel`` leads to (for messages)."""
    import grpc
    import torch

    from services.core.audio import read_audio
    from services.core.engine import EngineError
    from services.mimi.client import RemoteMimi
    from services.mimi.codes_file import save_codes

    try:
        client = RemoteMimi(channel, token)
        info = client.info()
        audio, _ = read_audio(input_path, info.sample_rate_hertz)
        codes = torch.from_numpy(client.encode(audio, info.sample_rate_hertz, num_codebooks))
    except (RuntimeError, OSError) as e:
        raise click.ClickException(f"cannot read audio {input_path}: {e}") from e
    except (grpc.RpcError, EngineError) as e:
        raise click.ClickException(f"{server}: {_details(e)}") from e
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
    from services.mimi.codes_file import CodesFileError, load_codes

    try:
        codes_file = load_codes(input_path)
    except CodesFileError as e:
        raise click.ClickException(str(e)) from e
    try:
        client = RemoteMimi(channel, token)
        info = client.info()
        audio = client.decode(codes_file.codes.numpy())
    except (grpc.RpcError, EngineError) as e:
        raise click.ClickException(f"{server}: {_details(e)}") from e
    if codes_file.model != info.model:
        click.echo(f"warning: {input_path} was made by {codes_file.model!r}, decoding with "
                   f"{info.model!r}", err=True)
    write_wav(output_path, audio[: codes_file.num_samples], info.sample_rate_hertz)
    click.echo(f"{input_path}: {codes_file.num_frames} frames -> {output_path} "
               f"(via {server})", err=True)


def _details(error: Exception) -> str:
    import grpc

    return error.details() if isinstance(error, grpc.RpcError) else str(error)
