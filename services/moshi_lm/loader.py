"""Loading a Moshi-family LM: config.json (or the Moshi 7B preset when a repository has none)
and model.safetensors, strict and key for key, from a local folder or a Hugging Face repo.

The model is built on the meta device and adopts the loaded tensors, so a checkpoint costs
about its own size in memory (plus the transient fused embedding table, a few % of it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from services.core.checkpoint import (
    CheckpointError,
    HubFileMissing,
    build_on_meta,
    load_into,
    load_state_dict,
    read_json,
    resolve_file,
)
from services.moshi_lm.config import LMConfig, preset
from services.moshi_lm.model import LMModel
from services.moshi_lm.quantize import QUANTIZE_MODES, pack_bf16, quantize_int8

CONFIG_NAME = "config.json"
DEFAULT_PRESET = "moshi_7b"
# Kyutai's first releases ship no config.json: they are the Moshi 7B layout. Only these.
REPOS_WITHOUT_CONFIG = frozenset({"kyutai/moshiko-pytorch-bf16", "kyutai/moshika-pytorch-bf16"})

log = logging.getLogger(__name__)


def load_config(checkpoint: str | os.PathLike | None = None, hf_repo: str | None = None
                ) -> LMConfig:
    """The checkpoint's config.json (``checkpoint``: a folder, or a weights file whose folder
    holds config.json), or the ``moshi_7b`` preset for the repositories known to ship none
    (REPOS_WITHOUT_CONFIG, said on the log). Anything else without config.json is an
    error: guessing a 7B layout for it would only fail later, less clearly."""
    if checkpoint is not None:
        path = Path(checkpoint)
        folder = path if path.is_dir() else path.parent
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        config_path = folder / CONFIG_NAME
        if not config_path.exists():
            raise CheckpointError(f"{folder} has no {CONFIG_NAME} (Kyutai's layout: the "
                                  "config next to the weights)")
        return LMConfig.from_dict(read_json(config_path))
    if hf_repo is None:
        raise ValueError("give a local checkpoint or a Hugging Face repository")
    if hf_repo in REPOS_WITHOUT_CONFIG:
        log.warning("%s ships no %s: using the Moshi 7B preset", hf_repo, CONFIG_NAME)
        return preset(DEFAULT_PRESET)
    try:
        return LMConfig.from_dict(read_json(resolve_file(CONFIG_NAME, hf_repo=hf_repo)))
    except HubFileMissing:
        raise CheckpointError(f"{hf_repo} has no {CONFIG_NAME}: not a Moshi-family LM "
                              "repository") from None


def load_lm(checkpoint: str | os.PathLike | None = None, hf_repo: str | None = None, *,
            config: LMConfig | None = None, dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu", quantize: str | None = None) -> LMModel:
    """An inference-ready LM in compute dtype ``dtype`` whatever the stored dtype.
    ``quantize``: int8 weights for the temporal transformer and text head, the fast CPU path:
    "int8" (dynamic int8 kernels, fastest at batch 2 and more) or "int8-weight" (activations
    kept float: this project's weight-only kernel on CPU, as fast as "int8" at batch 1 and
    closer to float); see ``quantize.py``."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {quantize!r}; known: {QUANTIZE_MODES}")
    config = config or load_config(checkpoint, hf_repo)
    weights = _weights_path(config, checkpoint, hf_repo)
    model = build_on_meta(lambda: LMModel(config))
    state = load_state_dict(weights, dtype=dtype, device=device)
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{weights}: tensor {key} has dtype {tensor.dtype}, "
                                  "expected floating point")
    load_into(model, state, source=str(weights))
    del state  # the model holds the tensors now; fusing may then free the per-stream copies
    return prepare_for_inference(model, quantize)


def prepare_for_inference(model: LMModel, quantize: str | None = None,
                          pack: bool = True) -> LMModel:
    """Eval mode, fused tables, and the fast CPU weight formats of ``quantize.py``: int8 for
    the temporal transformer and text head with ``quantize``; with ``pack``, every other bf16
    linear weight on CPU in oneDNN's layout (bit-identical results)."""
    model.eval().requires_grad_(False)
    model.fuse_weights()
    if quantize is not None:
        quantize_int8(model.transformer, quantize)
        quantize_int8(model.text_linear, quantize)
    if pack:
        for part in model.linear_parts():
            pack_bf16(part)
    return model


def _weights_path(config: LMConfig, checkpoint: str | os.PathLike | None,
                  hf_repo: str | None) -> Path:
    if checkpoint is not None and Path(checkpoint).is_file():
        return Path(checkpoint)
    return resolve_file(config.moshi_name, checkpoint, hf_repo)
