"""The transformer every model of the family uses: the codec's encoder/decoder transformers,
Moshi's temporal transformer and its depth transformer.

Streaming keeps keys and values in a fixed ring buffer driven by one position tensor per
session. Attention sees exactly the keys with ``0 <= q_pos - k_pos < context`` (a sliding
window that includes the current step). A call may bring up to ``max_chunk`` steps; the ring
holds ``context + max_chunk - 1`` entries so the first query of a chunk still sees its whole
window after the chunk was written. Non-streaming calls run the same code on a fresh state,
chunk by chunk, so the two modes agree exactly and memory stays bounded on long inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.kernels.attention import attend
from services.core.kernels.float_linear import linear
from services.core.streaming import StreamingState, _broadcast_mask


def gated_hidden_size(dim: int, dim_feedforward: int) -> int:
    """Hidden width of a gated FFN from its nominal feed-forward width (spec §2.1)."""
    if dim_feedforward == 4 * dim:
        return 21 * dim // 8
    return 2 * dim_feedforward // 3


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    norm: str = "layer_norm"  # "layer_norm" (eps 1e-5, with bias) | "rms_norm_f32" (eps 1e-8)
    gating: str = "none"  # "none": linear1 -> GELU -> linear2 | "silu": gated linear_in/out
    layer_scale: float | None = None  # learnt per-channel residual scales when set
    context: int | None = None  # sliding attention window in steps; None: unbounded
    max_period: float = 10_000.0
    positional_embedding: str = "rope"  # "rope" (interleaved pairs) | "none"
    weights_per_step: int = 0  # >0: that many weight sets, picked per step (depth transformer)
    cross_attention: bool = False  # every layer also attends to a fixed per-session source

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def weight_sets(self) -> int:
        return max(1, self.weights_per_step)


class RMSNorm(nn.Module):
    """RMS norm computed in float32, weight stored as ``alpha`` [1, 1, dim]."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        # The conversions are skipped when they would return their input (float32): each is
        # still a dispatched call, and norms run several times per layer step.
        x32 = x if x.dtype == torch.float32 else x.float()
        alpha = self.alpha if self.alpha.dtype == torch.float32 else self.alpha.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps) * alpha
        return y if y.dtype == x.dtype else y.to(x.dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8)
    raise ValueError(f"unknown norm {kind!r}")


def rope_angles(positions: Tensor, head_dim: int, max_period: float) -> Tensor:
    """The rotation at each position as complex numbers cos + i sin [B, T, 1, 1, head_dim / 2]
    (complex64), shaped to rotate q and k together in their fused [B, T, 2, H, head_dim] view.
    Built once per step and shared by every layer."""
    angles = positions.float()[..., None, None, None] * _rope_frequencies(
        head_dim, max_period, positions.device)
    return torch.complex(torch.cos(angles), torch.sin(angles))


@functools.lru_cache(maxsize=64)
def _rope_frequencies(head_dim: int, max_period: float, device: torch.device) -> Tensor:
    """The rotation frequencies [head_dim / 2] (float32): constants, computed once rather than
    at every step."""
    with torch.inference_mode(False):  # a plain tensor: usable in and out of inference mode
        half = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
        return torch.exp(half * (-2.0 * math.log(max_period) / head_dim))


@functools.lru_cache(maxsize=256)
def _step_indices(batch: int, steps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """arange(steps) [steps] and the batch index [batch, steps] of a call: constants of the
    call's shape, built once rather than at every step."""
    with torch.inference_mode(False):  # plain tensors: usable in and out of inference mode
        return (torch.arange(steps, device=device),
                torch.arange(batch, device=device)[:, None].expand(batch, steps))


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotates interleaved pairs (x[2i], x[2i+1]) of x [B, T, ..., D] by ``rotation`` (complex,
    broadcast against [B, T, ..., D / 2]), computed in float32.

    The pairs are read in place as complex numbers x[2i] + i x[2i+1], so the rotation is one
    complex product: the same products and sums as (re cos - im sin, re sin + im cos) in one
    kernel instead of eight (multiplies, sum, difference, stack) per layer step. The
    conversions are skipped in float32 (each is still a dispatched call)."""
    x32 = x if x.dtype == torch.float32 else x.float()
    rotated = torch.view_as_real(torch.view_as_complex(x32.unflatten(-1, (-1, 2))) * rotation)
    rotated = rotated.flatten(-2)
    return rotated if rotated.dtype == x.dtype else rotated.to(x.dtype)


def _apply(module: nn.Linear, x: Tensor) -> Tensor:
    """``module(x)`` through ``linear``: this project's kernel at a few fp32 rows (a streaming
    step), where torch's GEMM is slow; torch's own ``F.linear`` otherwise."""
    return linear(x, module.weight, module.bias)


class MultiheadAttention(nn.Module):
    """Self-attention with a fused [q; k; v] in-projection and no biases. With several weight
    sets, both projections are stored stacked and sliced per step."""

    def __init__(self, dim: int, num_heads: int, weight_sets: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.weight_sets = weight_sets
        self.in_proj_weight = nn.Parameter(torch.empty(weight_sets * 3 * dim, dim))
        self.out_proj = nn.Linear(dim, weight_sets * dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, rope: Tensor | None, cache: KVCacheView,
                weight_index: int = 0) -> Tensor:
        batch, steps, dim = x.shape
        w_in, w_out = self.in_proj_weight, self.out_proj.weight
        if self.weight_sets > 1:
            w_in = w_in.view(self.weight_sets, 3 * dim, dim)[weight_index]
            w_out = w_out.view(self.weight_sets, dim, dim)[weight_index]
        qkv = linear(x, w_in).view(batch, steps, 3, self.num_heads, -1)
        if rope is None:
            q, k, v = qkv.unbind(dim=2)
        else:  # one rotation call for q and k: fewer small ops on the per-step path
            (q, k), v = apply_rope(qkv[:, :, :2], rope).unbind(dim=2), qkv[:, :, 2]
        keys, values = cache.write(k, v)
        out = attend(q.transpose(1, 2), keys, values, cache.mask)
        return linear(out.transpose(1, 2).reshape(batch, steps, dim), w_out)


class CrossAttention(MultiheadAttention):
    """Attention from the stream to a fixed source (TTS voice conditioning): q from rows
    [0:dim] of the fused in-projection, k and v from rows [dim:3 dim] applied to the source.
    No positions, no mask. The source does not change during a session, so its keys and values
    are computed once (``project_source``) and kept in the state."""

    def project_source(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """source [B, S, dim] -> keys, values [B, H, S, head_dim]."""
        batch, length, dim = source.shape
        w_kv = self.in_proj_weight[dim:]
        kv = F.linear(source.to(w_kv.dtype), w_kv).view(batch, length, 2, self.num_heads, -1)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor) -> Tensor:  # type: ignore[override]
        batch, steps, dim = x.shape
        q = linear(x, self.in_proj_weight[:dim]).view(batch, steps, self.num_heads, -1)
        out = attend(q.transpose(1, 2), keys, values)
        return _apply(self.out_proj, out.transpose(1, 2).reshape(batch, steps, dim))


class GatedFFN(nn.Module):
    """SiLU(a) * b with [a; b] = linear_in(x), then linear_out."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = _apply(self.linear_in, x).chunk(2, dim=-1)
        return _apply(self.linear_out, F.silu(a) * b)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attn(norm1(x)), then (with cross-attention) x + cross(norm_cross(x)),
    then x + ffn(norm2(x)); self-attention and FFN optionally scaled."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        dim = cfg.d_model
        self.norm1 = make_norm(cfg.norm, dim)
        self.self_attn = MultiheadAttention(dim, cfg.num_heads, cfg.weight_sets)
        self.cross_attention = None
        if cfg.cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-5)
            self.cross_attention = CrossAttention(dim, cfg.num_heads)
        self.norm2 = make_norm(cfg.norm, dim)
        if cfg.gating == "none":
            self.linear1 = nn.Linear(dim, cfg.dim_feedforward, bias=False)
            self.linear2 = nn.Linear(cfg.dim_feedforward, dim, bias=False)
        elif cfg.gating == "silu":
            hidden = gated_hidden_size(dim, cfg.dim_feedforward)
            if cfg.weights_per_step:
                self.gating = nn.ModuleList(GatedFFN(dim, hidden) for _ in range(cfg.weight_sets))
            else:
                self.gating = GatedFFN(dim, hidden)
        else:
            raise ValueError(f"unknown gating {cfg.gating!r}")
        if cfg.layer_scale is not None:
            self.layer_scale_1 = LayerScale(dim, cfg.layer_scale)
            self.layer_scale_2 = LayerScale(dim, cfg.layer_scale)
        else:
            self.layer_scale_1 = self.layer_scale_2 = nn.Identity()

    def feed_forward(self, x: Tensor, weight_index: int) -> Tensor:
        if hasattr(self, "linear1"):
            return _apply(self.linear2, F.gelu(_apply(self.linear1, x)))
        if isinstance(self.gating, nn.ModuleList):
            return self.gating[weight_index](x)
        return self.gating(x)

    def forward(self, x: Tensor, rope: Tensor | None, cache: KVCacheView,
                weight_index: int = 0) -> Tensor:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), rope, cache, weight_index))
        if self.cross_attention is not None:
            if cache.cross is None:
                raise ValueError("cross-attention layers need a source: set_cross_source()")
            x = x + self.cross_attention(self.norm_cross(x), *cache.cross)
        return x + self.layer_scale_2(self.feed_forward(self.norm2(x), weight_index))


@dataclasses.dataclass
class TransformerState(StreamingState):
    """Ring KV cache of every layer plus the position bookkeeping shared by all layers."""

    keys: Tensor  # [L, B, H, capacity, head_dim]
    values: Tensor  # [L, B, H, capacity, head_dim]
    positions: Tensor  # [B, capacity] absolute position held by each slot; -1: empty
    offset: Tensor  # [B] position of the next step
    max_chunk: int  # most steps one call may bring
    # Cross-attention keys / values of the per-session source (set_cross_source), if any.
    cross_keys: Tensor | None = None  # [L, B, H, source_length, head_dim]
    cross_values: Tensor | None = None

    @property
    def fresh_values(self) -> dict[str, object]:
        return {"positions": -1}

    @property
    def batch_dims(self) -> dict[str, int]:
        return {"keys": 1, "values": 1, "cross_keys": 1, "cross_values": 1}

    @property
    def capacity(self) -> int:
        return self.positions.shape[1]


class KVCacheView:
    """One layer's slice of the ring for one call: where to write, and the attention mask."""

    def __init__(self, keys: Tensor, values: Tensor, batch_index: Tensor | None,
                 slots: Tensor | int, mask: Tensor, active: Tensor | None,
                 cross: tuple[Tensor, Tensor] | None = None):
        self.keys, self.values = keys, values
        self.batch_index, self.slots = batch_index, slots
        self.mask, self.active = mask, active
        self.cross = cross  # this layer's cross-attention keys and values [B, H, S, D]

    def write(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Stores k, v [B, T, H, D] for the active sessions; returns the whole ring [B, H, C, D]."""
        # Rounded to the ring's dtype first (a bf16 ring beside fp32 compute), so the step's
        # own key is the stored one; a no-op when the dtypes agree.
        k, v = k.to(self.keys.dtype), v.to(self.values.dtype)
        if isinstance(self.slots, int):  # every session writes the same slots
            if not k.requires_grad:  # a plain slice
                self.keys.narrow(2, self.slots, k.shape[1]).copy_(k.transpose(1, 2))
                self.values.narrow(2, self.slots, v.shape[1]).copy_(v.transpose(1, 2))
                return self.keys, self.values
            # Under autograd, the indexed path below (its out-of-place copy) for these slots.
            batch, steps = k.shape[:2]
            self.batch_index = torch.arange(batch, device=k.device)[:, None].expand(-1, steps)
            self.slots = torch.arange(self.slots, self.slots + steps,
                                      device=k.device).expand(batch, -1)
        index = (self.batch_index, slice(None), self.slots)
        if self.active is not None:
            keep = ~self.active.view(-1, 1, 1, 1)
            k = torch.where(keep, self.keys[index], k)
            v = torch.where(keep, self.values[index], v)
        if k.requires_grad:
            # Autograd must not see the shared ring change under it (every layer writes into
            # one buffer): attend over an out-of-place copy, store a detached one.
            keys, values = self.keys.clone(), self.values.clone()
            keys[index], values[index] = k, v
            self.keys[index], self.values[index] = k.detach(), v.detach()
            return keys, values
        self.keys[index] = k
        self.values[index] = v
        return self.keys, self.values


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None, max_chunk: int = 1,
                   capacity: int | None = None,
                   cross_length: int | None = None) -> TransformerState:
        """A fresh state for ``batch_size`` sessions. Without a context window, ``capacity``
        (the most steps a session will ever see) is required. With cross-attention,
        ``cross_length`` is the length of every session's source."""
        cfg = self.cfg
        if capacity is None:
            if cfg.context is None:
                raise ValueError("a transformer without context window needs a capacity")
            capacity = cfg.context + max_chunk - 1
        weight = self.layers[0].self_attn.in_proj_weight
        device, dtype = device or weight.device, dtype or weight.dtype
        shape = (cfg.num_layers, batch_size, cfg.num_heads, capacity, cfg.head_dim)
        cross_keys = cross_values = None
        if cfg.cross_attention and cross_length is not None:
            cross_shape = (*shape[:3], cross_length, cfg.head_dim)
            cross_keys = torch.zeros(cross_shape, device=device, dtype=dtype)
            cross_values = torch.zeros(cross_shape, device=device, dtype=dtype)
        return TransformerState(
            keys=torch.zeros(shape, device=device, dtype=dtype),
            values=torch.zeros(shape, device=device, dtype=dtype),
            positions=torch.full((batch_size, capacity), -1, device=device, dtype=torch.long),
            offset=torch.zeros(batch_size, device=device, dtype=torch.long),
            max_chunk=max_chunk,
            cross_keys=cross_keys,
            cross_values=cross_values,
        )

    def set_cross_source(self, state: TransformerState, source: Tensor,
                         sessions: Tensor | None = None) -> None:
        """Computes every layer's cross-attention keys and values of ``source`` [n, S, d_model]
        once, for the sessions ``sessions`` (long indices [n]; all when None)."""
        if state.cross_keys is None:
            raise ValueError("this state has no cross-attention source (init_state cross_length)")
        index = slice(None) if sessions is None else sessions
        for i, layer in enumerate(self.layers):
            keys, values = layer.cross_attention.project_source(source)
            state.cross_keys[i][index] = keys.to(state.cross_keys.dtype)
            state.cross_values[i][index] = values.to(state.cross_values.dtype)

    def forward(self, x: Tensor, state: TransformerState | None = None,
                active: Tensor | None = None, weight_index: int = 0,
                cross_source: Tensor | None = None) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model]. Without a state, x is one whole sequence and
        ``cross_source`` [B, S, d_model] the cross-attention source (when the layers have it)."""
        if state is None:
            steps = x.shape[1]
            # One chunk up to a bound: exact, differentiable (the ring is written once), and
            # memory stays bounded on long inputs.
            chunk = steps if self.cfg.context is None else min(steps, max(self.cfg.context, 512))
            state = self.init_state(
                x.shape[0], x.device, x.dtype, max_chunk=chunk,
                capacity=steps if self.cfg.context is None else None,
                cross_length=None if cross_source is None else cross_source.shape[1])
            if cross_source is not None:
                self.set_cross_source(state, cross_source)
        if x.shape[1] <= state.max_chunk:
            return self._step(x, state, active, weight_index)
        pieces = x.split(state.max_chunk, dim=1)
        return torch.cat([self._step(p, state, active, weight_index) for p in pieces], dim=1)

    def _step(self, x: Tensor, state: TransformerState, active: Tensor | None,
              weight_index: int) -> Tensor:
        batch, steps, _ = x.shape
        step_range, batch_index = _step_indices(batch, steps, x.device)
        positions = state.offset[:, None] + step_range
        slots = positions % state.capacity
        if active is None:
            state.positions[batch_index, slots] = positions
            state.offset += steps
        else:
            old = state.positions[batch_index, slots]
            state.positions[batch_index, slots] = torch.where(active[:, None], positions, old)
            state.offset += active.long() * steps
        mask = self._mask(positions, state.positions, active)
        rope = None
        if self.cfg.positional_embedding == "rope":
            rope = rope_angles(positions, self.cfg.head_dim, self.cfg.max_period)
        return self._layers(x, state, batch_index, slots, mask, active, rope, weight_index)

    def fresh_context_step(self, x: Tensor, state: TransformerState, step: int,
                           weight_index: int = 0) -> Tensor:
        """Step ``step`` of a context that every session restarts at 0 (step 0 rewinds the
        state): the depth transformer, whose every frame is a fresh dep_q-step sequence.
        x [B, 1, d_model], all sessions active; the result equals ``forward``'s.

        Why a second entry point: the depformer runs dep_q times per tick, and there the slot
        written, the attention mask (keys 0..step) and the rotation depend on ``step`` only,
        the same for every session. They are built once per step (``_fresh_context``) instead
        of from per-session positions at every call, a fixed cost of every tick."""
        if step == 0:
            state.positions.fill_(-1)
            state.offset.zero_()
        state.positions[:, step] = step
        state.offset += 1
        mask, rope = _fresh_context(step, state.capacity, x.device, self.cfg)
        return self._layers(x, state, None, step, mask, None, rope, weight_index)

    def _layers(self, x: Tensor, state: TransformerState, batch_index: Tensor | None,
                slots: Tensor | int, mask: Tensor, active: Tensor | None,
                rope: Tensor | None, weight_index: int) -> Tensor:
        for i, layer in enumerate(self.layers):
            cross = None
            if state.cross_keys is not None:
                cross = state.cross_keys[i], state.cross_values[i]
            cache = KVCacheView(state.keys[i], state.values[i], batch_index, slots, mask, active,
                                cross)
            x = layer(x, rope, cache, weight_index)
        return x

    def _mask(self, query_positions: Tensor, key_positions: Tensor,
              active: Tensor | None) -> Tensor:
        """[B, 1, T, capacity] True where a query may attend to a key."""
        delta = query_positions[:, :, None] - key_positions[:, None, :]
        mask = (key_positions[:, None, :] >= 0) & (delta >= 0)
        if self.cfg.context is not None:
            mask &= delta < self.cfg.context
        if active is not None:
            # Inactive sessions' outputs are discarded; an all-open mask keeps them finite.
            mask |= ~_broadcast_mask(active, mask)
        return mask[:, None]


@functools.lru_cache(maxsize=256)
def _fresh_context(step: int, capacity: int, device: torch.device, cfg: TransformerConfig
                   ) -> tuple[Tensor, Tensor | None]:
    """The attention mask [1, 1, 1, capacity] (keys at slots 0..step, the ones written since
    the context restarted) and the rotation of position ``step`` (None without RoPE), both
    broadcasting over the sessions: see ``Transformer.fresh_context_step``."""
    with torch.inference_mode(False):  # plain tensors: usable in and out of inference mode
        mask = (torch.arange(capacity, device=device) <= step).view(1, 1, 1, capacity)
        rope = None
        if cfg.positional_embedding == "rope":
            position = torch.full((1, 1), step, device=device)
            rope = rope_angles(position, cfg.head_dim, cfg.max_period)
    return mask, rope
