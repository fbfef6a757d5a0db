"""Checks every service applies to a client's request the same way: sampling parameters and
the seed policy. Neutral ground, so ASR, TTS, LM and dialogue share them without importing
each other's internals.

Seed policy: a request without a seed is sampled with seed ``DEFAULT_SEED`` (0). The same
inputs then give the same output wherever they run (in process, through one server or
through a dialogue server whose LM is another server); vary the seed to vary the output.
"""

from __future__ import annotations

import math
from typing import Protocol

from services.core.common_pb2 import SamplingParams
from services.core.engine import InvalidInput

MAX_TEMPERATURE = 10.0  # beyond this sampling is uniform noise: surely a client bug
MAX_SEED = (1 << 63) - 1  # seeds live in an int64 tensor
DEFAULT_SEED = 0


class HasSeed(Protocol):
    """Any config message with an ``optional uint64 seed`` field."""

    seed: int

    def HasField(self, name: str) -> bool: ...


def check_seed(seed: int) -> int:
    """``seed`` if it fits the int64 the draws are keyed by; InvalidInput otherwise."""
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"seed must be below 2**63, got {seed}")
    return int(seed)


def resolve_seed(config: HasSeed) -> int:
    """The seed a request runs with: its own, else DEFAULT_SEED (the one seed policy)."""
    return check_seed(config.seed) if config.HasField("seed") else DEFAULT_SEED


def sampling_params(params: SamplingParams, default_temperature: float, default_top_k: int,
                    cardinality: int, what: str) -> tuple[float, int]:
    """(temperature, top_k) of ``params``, unset fields from the defaults; InvalidInput
    naming ``what`` ("text", "audio") when out of range."""
    temperature = params.temperature if params.HasField("temperature") else default_temperature
    top_k = params.top_k if params.HasField("top_k") else default_top_k
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise InvalidInput(f"{what} temperature must be in [0, {MAX_TEMPERATURE:g}] "
                           f"(0 = greedy), got {temperature}")
    if not 0 <= top_k <= cardinality:
        raise InvalidInput(f"{what} top_k must be in 0..{cardinality} (0 = no limit), "
                           f"got {top_k}")
    return float(temperature), int(top_k)
