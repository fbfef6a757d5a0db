"""Faster CPU weight formats for inference: int8 weights, and bf16 weights pre-packed for
oneDNN.

A step of the LM at small batch is bound by reading the weights from memory, and torch's plain
bf16 matrix-vector product on CPU is far from that bound. Two formats help:

- ``Int8Weight`` (``load_lm(quantize="int8")``): symmetric int8 with one scale per output row;
  activations in bf16, every matmul through torch's fused int8-weight kernel
  (``torch._weight_int8pack_mm``), which dequantizes on the fly. A quarter of the fp32 bytes.
  Applied to the temporal transformer and the text head (nearly all the weights read per step).
- ``PackedWeight`` (automatic for bf16 on CPU): the same bf16 values in oneDNN's blocked
  layout (``torch.ops.mkldnn``); results are bit-identical to ``F.linear``, only faster.

Both are tensors that ``F.linear`` understands, so modules (``nn.Linear`` and the attention's
fused ``in_proj_weight``) keep their code; a weight that is sliced (a depformer's per-step
weights, a cross-attention's split in-projection) is left as it is. Converted models are for
inference only: their state_dict no longer holds plain tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.transformer import MultiheadAttention

QUANTIZE_MODES = ("int8",)
_INT8_ALIGN = 32  # the int8 kernel needs the input width to be a multiple of 16; keep margin


class Int8Weight(Tensor):
    """An int8 [out, in] weight with per-row ``scales`` [out]; only ``F.linear`` is defined on
    it (other functions see the raw int8 values)."""

    scales: Tensor

    @staticmethod
    def quantize(weight: Tensor, compute_dtype: torch.dtype = torch.bfloat16) -> Int8Weight:
        w = weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        out = q.as_subclass(Int8Weight)
        out.scales = scales.to(compute_dtype)
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            return _int8_linear(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _int8_linear(x: Tensor, weight: Int8Weight, bias: Tensor | None = None) -> Tensor:
    flat = x.reshape(-1, x.shape[-1]).to(weight.scales.dtype)
    out = torch._weight_int8pack_mm(flat, weight.as_subclass(Tensor), weight.scales)
    out = out.view(*x.shape[:-1], -1).to(x.dtype)
    return out if bias is None else out + bias


class PackedWeight(Tensor):
    """A bf16 weight in oneDNN's packed layout (an opaque tensor held in ``packed``); only
    ``F.linear`` is defined on it."""

    packed: Tensor

    @staticmethod
    def __new__(cls, weight: Tensor) -> PackedWeight:
        out = Tensor._make_wrapper_subclass(cls, weight.shape, dtype=weight.dtype,
                                            device=weight.device)
        out.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        return out

    def __init__(self, weight: Tensor):
        super().__init__()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            return torch.ops.mkldnn._linear_pointwise(x, weight.packed, bias, "none", [], "")
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"{func} is not defined on a packed inference weight")


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (dtype == torch.bfloat16 and device.type == "cpu"
            and torch.backends.mkldnn.is_available())


def quantize_int8(module: nn.Module, compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """Int8 weights for ``module``'s linear layers, in place; returns how many."""
    def convert(weight: Tensor) -> Tensor | None:
        if weight.shape[1] % _INT8_ALIGN:
            return None
        return Int8Weight.quantize(weight, compute_dtype)
    return _convert(module, convert)


def pack_bf16(module: nn.Module) -> int:
    """oneDNN-packed bf16 weights for ``module``'s linear layers on CPU; returns how many."""
    def convert(weight: Tensor) -> Tensor | None:
        return PackedWeight(weight) if can_pack(weight.dtype, weight.device) else None
    return _convert(module, convert)


def _convert(module: nn.Module, convert: Callable[[Tensor], Tensor | None]) -> int:
    count = 0
    for owner, name in _linear_weights(module):
        weight = getattr(owner, name)
        if isinstance(weight, (Int8Weight, PackedWeight)) or weight.dim() != 2:
            continue
        new = convert(weight)
        if new is not None:
            delattr(owner, name)
            owner.register_buffer(name, new)
            count += 1
    return count


def _linear_weights(module: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(module, attribute) of every weight used only through ``F.linear``."""
    sliced = set()
    for m in module.modules():
        if isinstance(m, MultiheadAttention) and (m.weight_sets > 1
                                                  or type(m) is not MultiheadAttention):
            sliced.add(id(m))  # per-step slices, or a split in-projection (cross-attention)
            if m.weight_sets > 1:
                sliced.add(id(m.out_proj))
    for m in module.modules():
        if id(m) in sliced:
            continue
        if type(m) is MultiheadAttention:
            yield m, "in_proj_weight"
        elif isinstance(m, nn.Linear):
            yield m, "weight"
