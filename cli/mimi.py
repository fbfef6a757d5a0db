"""``moshi-services mimi``: audio files <-> codes files with the Mimi codec.

    moshi-services mimi encode speech.flac speech.safetensors --hf-repo kyutai/moshiko-pytorch-bf16
    moshi-services mimi decode speech.safetensors speech.wav --hf-repo kyutai/moshiko-pytorch-bf16

Without --checkpoint / --hf-repo both commands run on a small built-in random Mimi, so the whole
path works offline (its audio is noise-like, not meaningful). Long files go through the codec
in pieces of PROGRESS_FRAMES frames (streaming gives the same codes as one batch call), which
bounds memory and drives the progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from cli.mimi_remote import remote_decode, remote_encode
from cli.options import client_options, open_channel, run_options
from services.wiring import ModelOptions, load_mimi_model, set_threads

if TYPE_CHECKING:
    from services.mimi import MimiModel

PROGRESS_FRAMES = 125  # 10 s per piece


def model_options(command: Callable) -> Callable:
    """Where the model comes from and how it runs, shared by both commands."""
    command = run_options(command, lm=False)
    command = click.option(
        "--hf-repo", metavar="REPO",
        help="Hugging Face repository with Kyutai's Mimi file, e.g. "
             "kyutai/moshiko-pytorch-bf16 (uses the HF cache; HF_HUB_OFFLINE=1 works)."
    )(command)
    return click.option(
        "--checkpoint", "--mimi-checkpoint", "checkpoint", type=click.Path(exists=True),
        help="Mimi safetensors file, or a folder holding Kyutai's file.")(command)


@click.group()
def mimi() -> None:
    """Mimi codec: 24 kHz audio <-> 12.5 Hz frames of codes."""


def _model(checkpoint: str | None, hf_repo: str | None, device: str, dtype: str,
           threads: int | None) -> MimiModel:
    from services.core.checkpoint import CheckpointError

    set_threads(threads)
    options = ModelOptions(hf_repo=hf_repo, mimi_checkpoint=checkpoint, device=device,
                           dtype=dtype)
    try:
        return load_mimi_model(options)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e


def _with_progress(pieces: list, label: str) -> Iterator:
    """Iterates ``pieces``, showing a progress bar on stderr when there is more than one."""
    if len(pieces) <= 1:
        yield from pieces
        return
    with click.progressbar(pieces, label=label, file=sys.stderr) as bar:
        yield from bar


@mimi.command()
@click.argument("input_path", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.argument("output_path", metavar="OUT.safetensors", type=click.Path(dir_okay=False))
@click.option("--num-codebooks", "-k", type=click.IntRange(1, 32), default=8, show_default=True,
              help="Codebooks per frame (quality vs size; Moshi uses 8, STT/TTS 32).")
@model_options
@client_options
def encode(input_path: str, output_path: str, num_codebooks: int, checkpoint: str | None,
           hf_repo: str | None, device: str, dtype: str, threads: int | None,
           server: str | None, token: str | None, tls: bool, ca_cert: str | None) -> None:
    """Encode an audio file (any format and rate; stereo is mixed to mono) to a codes file."""
    import torch

    from services.core.audio import read_audio
    from services.mimi.codes_file import save_codes

    if server is not None:
        return remote_encode(input_path, output_path, num_codebooks, server,
                             open_channel(server, tls, ca_cert), token)
    model = _model(checkpoint, hf_repo, device, dtype, threads)
    if num_codebooks > model.cfg.max_codebooks:
        raise click.BadParameter(f"this model has {model.cfg.max_codebooks} codebooks",
                                 param_hint="--num-codebooks")
    try:
        audio, _ = read_audio(input_path, model.sample_rate)
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise click.ClickException(f"cannot read audio {input_path}: {e}") from e
    wav = torch.from_numpy(audio).to(device)
    wav = torch.nn.functional.pad(wav, (0, -wav.numel() % model.frame_size))[None, None]
    state = model.init_encoder_state(1, max_frames=PROGRESS_FRAMES)
    pieces = list(wav.split(PROGRESS_FRAMES * model.frame_size, dim=-1)) if wav.numel() else []
    codes = torch.zeros(1, num_codebooks, 0, dtype=torch.long)
    with torch.inference_mode():
        codes = torch.cat([codes] + [
            model.encode_step(p, state, num_codebooks=num_codebooks).cpu()
            for p in _with_progress(pieces, "encoding")], dim=-1)[0]
    save_codes(output_path, codes, num_samples=len(audio), model=model.name,
               sample_rate=model.sample_rate, frame_rate=model.cfg.frame_rate)
    click.echo(f"{input_path}: {len(audio) / model.sample_rate:.2f} s -> {codes.shape[1]} "
               f"frames x {codes.shape[0]} codebooks -> {output_path}", err=True)


@mimi.command()
@click.argument("input_path", metavar="IN.safetensors",
                type=click.Path(exists=True, dir_okay=False))
@click.argument("output_path", metavar="OUT.wav", type=click.Path(dir_okay=False))
@model_options
@client_options
def decode(input_path: str, output_path: str, checkpoint: str | None, hf_repo: str | None,
           device: str, dtype: str, threads: int | None, server: str | None,
           token: str | None, tls: bool, ca_cert: str | None) -> None:
    """Decode a codes file to a 24 kHz wav of the original length."""
    import torch

    from services.core.audio import write_wav
    from services.mimi.codes_file import CodesFileError, load_codes

    if server is not None:
        return remote_decode(input_path, output_path, server,
                             open_channel(server, tls, ca_cert), token)
    try:
        codes_file = load_codes(input_path)
    except CodesFileError as e:
        raise click.ClickException(str(e)) from e
    model = _model(checkpoint, hf_repo, device, dtype, threads)
    if codes_file.num_codebooks > model.cfg.max_codebooks:
        raise click.ClickException(f"{input_path} has {codes_file.num_codebooks} codebooks, "
                                   f"the model {model.cfg.max_codebooks}")
    if codes_file.frame_size != model.frame_size:
        raise click.ClickException(f"{input_path} holds frames of {codes_file.frame_size} "
                                   f"samples, the model makes {model.frame_size}")
    if codes_file.model != model.name:
        click.echo(f"warning: {input_path} was made by {codes_file.model!r}, decoding with "
                   f"{model.name!r}", err=True)
    codes = codes_file.codes.to(device)[None]
    state = model.init_decoder_state(1, max_frames=PROGRESS_FRAMES)
    pieces = list(codes.split(PROGRESS_FRAMES, dim=-1)) if codes.numel() else []
    with torch.inference_mode():
        audio = torch.cat([torch.zeros(0)] + [model.decode_step(p, state)[0, 0].float().cpu()
                                              for p in _with_progress(pieces, "decoding")])
    write_wav(output_path, audio[: codes_file.num_samples].numpy(), model.sample_rate)
    click.echo(f"{input_path}: {codes_file.num_frames} frames -> "
               f"{codes_file.num_samples / model.sample_rate:.2f} s -> {output_path}", err=True)
