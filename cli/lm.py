"""``moshi-services lm``: run the Moshi LM offline on a codes file.

    moshi-services mimi encode question.wav user.safetensors --hf-repo kyutai/moshiko-pytorch-bf16
    moshi-services lm generate --hf-repo kyutai/moshiko-pytorch-bf16 \\
        --user-codes user.safetensors -o reply.safetensors --dtype bfloat16
    moshi-services mimi decode reply.safetensors reply.wav --hf-repo kyutai/moshiko-pytorch-bf16

The user's frames are fed one per step, as a live session would (the first frame only fills
the model's warm-up step, as in Kyutai's server). The output holds the frames the streaming
step returned: tensor ``text`` [T'] and, for models with a depth transformer, ``codes``
[dep_q, T'] with the codes-file metadata, so ``mimi decode`` turns it into audio.
Without --checkpoint / --hf-repo a small built-in random LM is used (output not meaningful).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from cli.errors import Group
from cli.files import check_output
from cli.mimi_remote import read_codes
from cli.options import run_options
from services.core.validation import DEFAULT_SEED
from services.wiring import ModelOptions, lm_generator, load_lm_model, set_threads

if TYPE_CHECKING:
    import torch

    from services.moshi_lm.generate import LMGenerator, SamplingSettings

TEXT_KEY = "text"


@click.group(cls=Group)
def lm() -> None:
    """Moshi LM: text and audio codes from the user's audio codes."""


@lm.command()
@click.option("--checkpoint", "--lm-checkpoint", "checkpoint", type=click.Path(exists=True),
              help="Folder with config.json and model.safetensors (Kyutai's layout).")
@click.option("--hf-repo", metavar="REPO",
              help="Hugging Face repository, e.g. kyutai/moshiko-pytorch-bf16.")
@click.option("--user-codes", "user_codes", required=True, metavar="IN.safetensors",
              type=click.Path(exists=True, dir_okay=False),
              help="The user's codes file, as written by `mimi encode`.")
@click.option("-o", "--output", required=True, metavar="OUT.safetensors",
              type=click.Path(dir_okay=False), help="Where to write text and codes.")
@click.option("--greedy", is_flag=True, help="Argmax everywhere (no sampling).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help=f"Sampling seed (default {DEFAULT_SEED}).")
@click.option("--temperature", type=click.FloatRange(0), default=None,
              help="Audio temperature (default: the checkpoint's, else 0.8).")
@click.option("--top-k", type=click.IntRange(0), default=None,
              help="Audio top-k, 0 = none (default: the checkpoint's, else 250).")
@click.option("--text-temperature", type=click.FloatRange(0), default=None,
              help="Text temperature (default: the checkpoint's, else 0.7).")
@click.option("--text-top-k", type=click.IntRange(0), default=None,
              help="Text top-k, 0 = none (default: the checkpoint's, else 25).")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Steps to run (default: one per user frame).")
@run_options
def generate(checkpoint: str | None, hf_repo: str | None, user_codes: str, output: str,
             greedy: bool, seed: int | None, temperature: float | None, top_k: int | None,
             text_temperature: float | None, text_top_k: int | None, steps: int | None,
             device: str, dtype: str, threads: int | None, quantize: str | None,
             kv_dtype: str | None) -> None:
    """Generate Moshi's side (text and audio codes) for the user's codes."""
    if greedy and seed is not None:
        raise click.UsageError("--greedy and --seed exclude each other")
    from services.builtin import BUILTIN_MIMI_NAME
    from services.core.checkpoint import CheckpointError

    check_output(output, "'-o' / '--output'")  # before the model: fail early
    codes = read_codes(user_codes).codes
    set_threads(threads)
    options = ModelOptions(hf_repo=hf_repo, lm_checkpoint=checkpoint, device=device,
                           dtype=dtype, quantize=quantize, kv_dtype=kv_dtype)
    try:
        model, _, tokenizer = load_lm_model(options)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    cfg = model.cfg
    if codes.shape[0] < cfg.num_input_codebooks:
        raise click.ClickException(f"{user_codes} has {codes.shape[0]} codebooks, the model "
                                   f"takes {cfg.num_input_codebooks}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.card):
        raise click.ClickException(f"{user_codes} holds codes outside [0, {cfg.card})")
    steps = steps or codes.shape[1]
    if steps > codes.shape[1]:
        raise click.BadParameter(f"only {codes.shape[1]} user frames", param_hint="--steps")
    settings = _settings(cfg.lm_gen_config, greedy, seed, temperature, top_k, text_temperature,
                         text_top_k)
    text, audio = _run(lm_generator(model, options), codes[:, :steps].to(device), settings)
    # The codec the reply's codes are meant for: the built-in LM speaks the built-in Mimi.
    _save(output, text, audio, BUILTIN_MIMI_NAME if options.builtin_lm else cfg.mimi_name)
    click.echo(f"{user_codes}: {steps} steps -> {text.numel()} frames -> {output}", err=True)
    if tokenizer is not None:
        click.echo(f"text: {tokenizer.display(text.tolist()).strip()}", err=True)


def _settings(config: dict, greedy: bool, seed: int | None, temperature: float | None,
              top_k: int | None, text_temperature: float | None, text_top_k: int | None
              ) -> SamplingSettings:
    from services.moshi_lm.generate import SamplingSettings

    if greedy:
        return SamplingSettings.greedy()
    given = {"audio_temperature": temperature, "audio_top_k": top_k,
             "text_temperature": text_temperature, "text_top_k": text_top_k}
    seed = DEFAULT_SEED if seed is None else seed
    return dataclasses.replace(SamplingSettings.from_lm_gen_config(config, seed=seed),
                               **{k: v for k, v in given.items() if v is not None})


def _run(generator: LMGenerator, codes: torch.Tensor, settings: SamplingSettings
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One session over the user frames: the valid frames' text [T'] and audio [dep_q, T']."""
    import torch

    state = generator.init_state(1, settings)
    frames = []
    for t in range(codes.shape[1]):
        result = generator.step(state, codes[None, :, t])
        if result.valid.item():
            frames.append(result.frame[0].cpu())
    frames = (torch.stack(frames) if frames
              else torch.zeros(0, generator.cfg.num_generated, dtype=torch.long))
    return frames[:, 0], frames[:, 1:].T


def _save(path: str, text: torch.Tensor, audio: torch.Tensor, mimi_name: str) -> None:
    """``text`` always; ``codes`` with the codes-file metadata when there is audio."""
    import torch

    from services.core.constants import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE
    from services.mimi.codes_file import CODES_KEY, write_safetensors

    tensors = {TEXT_KEY: text.to(torch.int32).contiguous()}
    metadata = {"sample_rate": str(SAMPLE_RATE), "frame_rate": str(FRAME_RATE),
                "num_codebooks": str(audio.shape[0]), "num_samples": str(text.numel() * FRAME_SIZE),
                "model": mimi_name}
    if audio.shape[0]:
        tensors[CODES_KEY] = audio.to(torch.int16).contiguous()
    write_safetensors(path, tensors, metadata)
