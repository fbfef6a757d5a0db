import json

import torch

from services.moshi_lm.config import LMConfig
from services.moshi_lm.loader import load_lm
from services.moshi_lm.model import LMModel
from tests.conftest import FIXTURES


def fixture_config(name: str) -> LMConfig:
    return LMConfig.from_dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def load_fixture(name: str, dtype: torch.dtype = torch.float32) -> LMModel:
    """A golden checkpoint through the real loader (its config comes from the sidecar)."""
    return load_lm(FIXTURES / f"{name}.safetensors", config=fixture_config(name), dtype=dtype)


def tiny_config(**overrides) -> LMConfig:
    """A small random LM in the Moshi layout: 3 generated and 3 input codebooks."""
    values = dict(dim=32, num_heads=2, num_layers=2, context=8, text_card=40, card=16, n_q=6,
                  dep_q=3, delays=(0, 0, 1, 1, 0, 1, 1), depformer_dim=16,
                  depformer_num_heads=2, depformer_num_layers=1, depformer_dim_feedforward=48)
    return LMConfig(**{**values, **overrides})


def tiny_model(seed: int = 0, **overrides) -> LMModel:
    from services.moshi_lm.loader import prepare_for_inference

    torch.manual_seed(seed)
    return prepare_for_inference(LMModel(tiny_config(**overrides)))
