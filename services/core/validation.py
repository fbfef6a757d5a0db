"""Checks every service applies to a client's request the same way: one rule per field, the
same in every RPC (sampling parameters, the seed policy, audio samples, text, bounded numbers
such as cfg_coef). Neutral ground, so ASR, TTS, LM, dialogue and Mimi share them without
importing each other's internals.

What the wire cannot check is said in the protos: an integer sent as a varint wider than its
field (a code of 2**32 or more into an int32) arrives truncated to the field's width, so the
server sees, and range-checks, only the truncated value.

Seed policy: a request without a seed is sampled with seed ``DEFAULT_SEED`` (0). The same
inputs then give the same output wherever they run (in process, through one server or
through a dialogue server whose LM is another server); vary the seed to vary the output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from services.core.common_pb2 import SamplingParams

MAX_TEMPERATURE = 10.0  # beyond this sampling is uniform noise: surely a client bug
# float32 audio is full scale at +-1; a little overshoot is normal after processing, but
# beyond 4 (12 dB over full scale) it is not audio (e.g. 1e30: a client's wrong byte order).
MAX_SAMPLE_MAGNITUDE = 4.0
EMPTY_TEXT = "the text is empty (nothing but white space)"
MAX_SEED = (1 << 63) - 1  # seeds live in an int64 tensor
DEFAULT_SEED = 0


class HasSeed(Protocol):
    """Any config message with an ``optional uint64 seed`` field."""

    seed: int

    def HasField(self, name: str) -> bool: ...


def check_seed(seed: int) -> int:
    """``seed`` if it fits the int64 the draws are keyed by; InvalidInput otherwise."""
    # Imported here: the CLI reads DEFAULT_SEED at start-up, before torch is wanted.
    from services.core.engine import InvalidInput

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
    from services.core.engine import InvalidInput

    temperature = params.temperature if params.HasField("temperature") else default_temperature
    top_k = params.top_k if params.HasField("top_k") else default_top_k
    check_range(f"{what} temperature (0 = greedy)", temperature, 0, MAX_TEMPERATURE)
    if not 0 <= top_k <= cardinality:
        raise InvalidInput(f"{what} top_k must be in 0..{cardinality} (0 = no limit), "
                           f"got {top_k}")
    return float(temperature), int(top_k)


def check_range(name: str, value: float, low: float, high: float) -> float:
    """``value`` if it is a finite number in [low, high]; InvalidInput naming ``name``
    otherwise (NaN fails every comparison, so it is caught here, not let through)."""
    from services.core.engine import InvalidInput

    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidInput(f"{name} must be in [{low:g}, {high:g}], got {value}")
    return float(value)


def check_samples(samples: np.ndarray) -> np.ndarray:
    """float32 samples from the wire: finite and within +-MAX_SAMPLE_MAGNITUDE."""
    import numpy as np  # here: the CLI imports this module at start-up, before numpy is wanted

    from services.core.engine import InvalidInput

    if samples.size == 0:
        return samples
    if not np.isfinite(samples).all():
        raise InvalidInput("audio contains NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise InvalidInput(f"float32 audio is full scale at +-1; a sample of {peak:g} is "
                           f"beyond +-{MAX_SAMPLE_MAGNITUDE:g}: not audio (wrong encoding or "
                           "byte order?)")
    return samples


def check_text(text: str) -> str:
    """``text`` unless it has nothing but white space (the same rule for a whole text and
    for everything a text stream sent before its end)."""
    from services.core.engine import InvalidInput

    if not text.strip():
        raise InvalidInput(EMPTY_TEXT)
    return text
