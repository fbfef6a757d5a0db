"""Building Mimi: from Kyutai's checkpoint (local file, folder or Hugging Face repository), or
the small built-in random model used when no checkpoint is given."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from services.core.checkpoint import (
    build_on_meta,
    load_into,
    load_state_dict,
    read_json,
    resolve_file,
)
from services.mimi.config import MimiConfig, get_preset
from services.mimi.model import DEFAULT_CODEBOOKS, MimiModel

# The same weights under the Moshi repositories' name and the DSM (STT/TTS) repositories' name.
CHECKPOINT_NAMES = (
    "tokenizer-e351c8d8-checkpoint125.safetensors",
    "mimi-pytorch-e351c8d8@125.safetensors",
)
PUBLISHED_PRESET = "mimi_202407"
RANDOM_PRESET = "tiny"


def find_checkpoint(checkpoint: str | os.PathLike | None = None,
                    hf_repo: str | None = None) -> Path:
    """The checkpoint file: ``checkpoint`` itself if it is a file; else the first of
    CHECKPOINT_NAMES found in the folder ``checkpoint`` or in the repository ``hf_repo``."""
    if checkpoint is not None and Path(checkpoint).is_file():
        return Path(checkpoint)
    if checkpoint is None and hf_repo is None:
        raise ValueError("give a Mimi checkpoint path or a Hugging Face repository")
    from huggingface_hub.errors import EntryNotFoundError

    where = checkpoint if checkpoint is not None else f"Hugging Face repository {hf_repo}"
    for name in CHECKPOINT_NAMES:
        try:
            return resolve_file(name, checkpoint, hf_repo)
        except (FileNotFoundError, EntryNotFoundError):
            continue
    raise FileNotFoundError(f"no Mimi checkpoint in {where}: looked for "
                            f"{', '.join(CHECKPOINT_NAMES)}")


def config_for(path: Path, config: MimiConfig | str | None = None) -> MimiConfig:
    """``config`` if given (a preset name or a config); else the ``config`` of a JSON sidecar
    with the checkpoint's stem (how the golden files ship their small variants); else the
    published config (Kyutai's files ship none)."""
    if isinstance(config, MimiConfig):
        return config
    if isinstance(config, str):
        return get_preset(config)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return MimiConfig.from_dict(read_json(sidecar))
    return get_preset(PUBLISHED_PRESET)


def load_mimi(checkpoint: str | os.PathLike | None = None, hf_repo: str | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              num_codebooks: int = DEFAULT_CODEBOOKS,
              config: MimiConfig | str | None = None) -> MimiModel:
    """Loads Mimi strictly, key for key (safetensors only). A file that does not fit raises one
    CheckpointError naming every missing, unexpected and mis-shaped key."""
    path = find_checkpoint(checkpoint, hf_repo)
    cfg = config_for(path, config)
    model = build_on_meta(lambda: MimiModel(cfg, num_codebooks, name=path.name))
    load_into(model, load_state_dict(path, dtype=dtype, device=device), source=str(path))
    return model.eval()


def build_random_mimi(config: MimiConfig | str = RANDOM_PRESET, seed: int = 0,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                      num_codebooks: int = DEFAULT_CODEBOOKS) -> MimiModel:
    """A randomly initialised Mimi, identical for a given seed. Its audio is not meaningful; it
    lets every path (CLI, services, tests) run without a download."""
    cfg = get_preset(config) if isinstance(config, str) else config
    name = f"random-{config if isinstance(config, str) else 'custom'}-seed{seed}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MimiModel(cfg, num_codebooks, name=name)
        _scale_codebooks_to_latents(model)
    return model.to(device=device, dtype=dtype).eval()


@torch.no_grad()
def _scale_codebooks_to_latents(model: MimiModel) -> None:
    """Unit-Gaussian centroids sit far from a random encoder's small, offset latents, so every
    frame would get the same codes. Placed around the latents (mean and spread measured on
    noise) for the first level of each half and at the residuals' spread for the others,
    codes vary as they do with a trained model."""
    noise = 0.1 * torch.randn(1, 1, 16 * model.frame_size)
    latent = model.encode_to_latent(noise)[0].t()  # [T, D]
    for half in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
        projected = latent @ half.input_proj.weight[..., 0].t()
        mean, spread = projected.mean(0), projected.std(0).mean()
        for level, layer in enumerate(half.vq.layers):
            codebook = layer._codebook
            codebook.embedding_sum.mul_(spread).add_(mean if level == 0 else 0)
            codebook.refresh()
