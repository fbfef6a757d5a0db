"""Token sampling, kept outside the models (docs/architecture.md#sampling).

Per row: greedy (argmax) when the temperature is <= 0; otherwise softmax(logits / T), keep the
top-k entries (all when top_k <= 0), and draw with the exponential race argmax(p / E),
E ~ Exp(1) i.i.d. The race is computed in the log domain, argmax(logits / T - log E): the
softmax normalisation does not change the argmax.

Where the Exp(1) noise comes from is a parameter:
- ``GeneratorNoise(torch.Generator)``: torch's RNG, for one-off use (one stream of draws).
- ``HashedNoise(keys)``: counter-based noise, a pure function of (row key, vocabulary index)
  computed with vectorised 32-bit integer hashing. A serving engine derives each row's key from
  (session seed, session step, stream), so a session's draws do not depend on which other
  sessions share the batch, nor on the batch order, and need no per-session RNG object or
  Python loop over sessions. Noise is only computed for the top-k candidates.

Cost: sampling runs once per generated stream per tick (9 times for a Moshi LM), so its number
of small kernels is a fixed cost of every tick. What does not change between ticks is computed
once: the per-index half of ``combine`` (``index_hashes``), each session's seed key
(``seed_keys``, at its start), each row's divisor and whether any row needs a top-k mask or a
greedy fallback (``SamplingParams.set``). The values drawn are the same, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
from torch import Tensor

_MASK32 = 0xFFFF_FFFF
# Multipliers below 2**31: a 32-bit value times one of them fits in int64 without overflow.
_MUL1, _MUL2 = 0x21F0_AAAD, 0x735A_2D97


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer mixer (xorshift-multiply, "lowbias32" family) on int64 tensors holding
    values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK32
    return x ^ (x >> 15)


def combine(key: Tensor, value: Tensor | int) -> Tensor:
    """Mixes ``value`` into a 32-bit ``key`` (int64 tensors, broadcasting)."""
    return hash32(key ^ hash32(torch.as_tensor(value, device=key.device) & _MASK32))


@functools.lru_cache(maxsize=32)
def _index_hash_table(size: int, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # a plain tensor: usable in and out of inference mode
        return hash32(torch.arange(size, device=device))


def index_hashes(size: int, device: torch.device | str) -> Tensor:
    """``hash32(i)`` for i in [0, size) (int64 [size]), computed once per size and device:
    ``combine(key, i)`` is ``hash32(key ^ index_hashes(size)[i])`` for such indices."""
    return _index_hash_table(size, torch.device(device))


def seed_keys(seeds: Tensor) -> Tensor:
    """The part of ``session_keys`` that depends on the seed only (constant for a session)."""
    return combine(hash32(seeds & _MASK32), seeds >> 32)


def step_keys(seed_key: Tensor, steps: Tensor, num_streams: int) -> Tensor:
    """``session_keys(seeds, steps, arange(num_streams))`` from the rows' ``seed_keys`` [B] and
    steps [B]: every stream's keys [B, num_streams]."""
    step_key = combine(seed_key, steps)[:, None]
    return hash32(step_key ^ index_hashes(num_streams, seed_key.device))


def session_keys(seeds: Tensor, steps: Tensor, stream: int | Tensor) -> Tensor:
    """Per-row noise keys from each session's seed (int64 >= 0), its own step counter and the
    stream number; broadcasting (e.g. [B, 1], [B, 1], [S] -> every stream's keys [B, S])."""
    return combine(combine(seed_keys(seeds), steps), stream)


class HashedNoise:
    """Exp(1) noise that is a pure function of (row key, vocabulary index); see
    ``session_keys`` for the keys of a serving engine."""

    def __init__(self, keys: Tensor):
        self.keys = keys  # [B] int64 in [0, 2**32)

    def __call__(self, indices: Tensor, vocab: int | None = None) -> Tensor:
        """Noise [B, n] at vocabulary indices [B, n]; with ``vocab`` (indices known to lie in
        [0, vocab)) the index hashes come from the cached table."""
        if vocab is None:
            mixed = combine(self.keys[:, None], indices)
        else:
            mixed = hash32(self.keys[:, None] ^ index_hashes(vocab, indices.device)[indices])
        bits = mixed >> 8  # 24 uniform bits
        uniform = (bits.float() + 0.5) * (1.0 / (1 << 24))  # in (0, 1), never 0 or 1
        return -torch.log(uniform)


class GeneratorNoise:
    """Exp(1) noise drawn from a ``torch.Generator`` (None: torch's global RNG)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, indices: Tensor, vocab: int | None = None) -> Tensor:
        noise = torch.empty(indices.shape, dtype=torch.float32, device=indices.device)
        return noise.exponential_(generator=self.generator)


@dataclasses.dataclass
class SamplingParams:
    """Per-row settings for one kind of stream. The host-side summaries (``any_random``,
    ``any_greedy``, ``any_top_k``, ``max_top_k``, ``min_top_k``) and ``divisor`` are refreshed
    by ``set``, so sampling needs no device-to-host sync and rebuilds nothing per step."""

    temperature: Tensor  # [B] float32; <= 0: greedy
    top_k: Tensor  # [B] int64; <= 0: whole vocabulary
    divisor: Tensor | None = None  # [B] float32: the temperature of sampling rows, else 1
    any_random: bool = False  # some row samples
    any_greedy: bool = True  # some row is greedy
    any_top_k: bool = False  # some sampling row has a top-k
    max_top_k: int = 0  # largest top-k of the sampling rows; 0 if one of them has none
    min_top_k: int = 0  # smallest top-k of the sampling rows; 0 if none has one

    def __post_init__(self) -> None:
        if self.divisor is None:
            self.divisor = torch.where(self.temperature > 0, self.temperature, 1.0)

    @classmethod
    def create(cls, batch_size: int, temperature: float = 0.0, top_k: int = 0,
               device: torch.device | str = "cpu") -> SamplingParams:
        params = cls(torch.zeros(batch_size, device=device),
                     torch.zeros(batch_size, dtype=torch.long, device=device))
        params.set(None, temperature, top_k)
        return params

    def set(self, rows: Tensor | None, temperature: float | Tensor, top_k: int | Tensor) -> None:
        """Sets the rows selected by the boolean mask ``rows`` [B] (all when None)."""
        rows = slice(None) if rows is None else rows
        self.temperature[rows] = torch.as_tensor(temperature, dtype=torch.float32,
                                                 device=self.temperature.device)
        self.top_k[rows] = torch.as_tensor(top_k, dtype=torch.long, device=self.top_k.device)
        sampling = self.temperature > 0
        self.divisor = torch.where(sampling, self.temperature, 1.0)
        k = self.top_k[sampling].tolist()
        self.any_random = bool(k)
        self.any_greedy = len(k) < len(self.temperature)
        self.any_top_k = any(v > 0 for v in k)
        self.max_top_k = 0 if any(v <= 0 for v in k) else max(k, default=0)
        self.min_top_k = min((v for v in k if v > 0), default=0)


def sample(logits: Tensor, params: SamplingParams,
           noise: HashedNoise | GeneratorNoise | Callable[[], HashedNoise | GeneratorNoise]
           ) -> Tensor:
    """logits [B, V] -> tokens [B] (int64). ``noise`` may be a factory, called only when some
    row samples (building hashed keys costs a few kernels per stream)."""
    if logits.dtype != torch.float32:
        logits = logits.float()
    if not params.any_random:
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    divisor = params.divisor[:, None]
    if params.any_top_k:
        # Dividing by a positive temperature keeps the order: pick candidates first, then
        # scale only them.
        candidates = min(params.max_top_k or vocab, vocab)
        values, indices = logits.topk(candidates, dim=-1)
        values = values / divisor
        if params.max_top_k == 0 or params.min_top_k < candidates:
            # Rows with a smaller k (or none: the whole vocabulary) drop the extra candidates.
            # (When every sampling row keeps them all, the mask would be all False: skipped.)
            row_k = torch.where(params.top_k > 0, params.top_k, vocab)
            rank = torch.arange(candidates, device=logits.device)
            values = values.masked_fill(rank >= row_k[:, None], -torch.inf)
    else:
        values = logits / divisor
        indices = torch.arange(vocab, device=logits.device).expand_as(values)
    if not isinstance(noise, (HashedNoise, GeneratorNoise)):
        noise = noise()
    race = values - torch.log(noise(indices, vocab))
    sampled = indices.gather(-1, race.argmax(dim=-1, keepdim=True))[:, 0]
    if not params.any_greedy:
        return sampled
    return torch.where(params.temperature > 0, sampled, logits.argmax(dim=-1))
