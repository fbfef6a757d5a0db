"""Faster CPU weight formats for inference: int8 weights, and bf16 weights pre-packed for
oneDNN.

A step of the LM at small batch is bound by reading the weights from memory, and torch's plain
bf16 matrix-vector product on CPU is far from that bound. These formats help; the int8 ones
(a quarter of the fp32 bytes) are applied to the temporal transformer and the text head, which
hold nearly all the weights read per step. All int8 formats hold the same values: one fp32
scale per output row, ``q = round(w / scale)`` in [-127, 127].

- ``DynamicInt8Weight`` (``load_lm(quantize="int8")``): torch.ao's dynamic quantization
  kernel (fbgemm): each step's activations quantized on the fly (per tensor, 7 bits), int8 x
  int8 products accumulated in int32. The fastest CPU path at a batch of 2 or more (its int8
  products cost a quarter of fp32 ones); logits move by about 1% of their range. CPU only.
- ``BlockedInt8Weight`` (``quantize="int8-weight"`` on CPU): weight-only int8 through this
  project's kernel (``services/core/kernels/int8_linear.cpp``): activations stay float, fp32
  arithmetic, each weight byte read once for the whole batch. As fast as ``int8`` at batch 1
  (both read the weights at the memory's speed), slower at larger batches (fp32 products),
  and as close to float as int8 weights allow. Used when the kernel builds on this machine
  (``kernels.available``).
- ``Int8Weight`` (``quantize="int8-weight"`` elsewhere: CUDA, or CPUs where the kernel does
  not build): the same weights through torch's int8-weight kernel
  (``torch._weight_int8pack_mm``, bf16 activations).
- ``PackedWeight`` (automatic for bf16 on CPU): the same bf16 values in oneDNN's blocked
  layout (``torch.ops.mkldnn``); results are bit-identical to ``F.linear``, only faster.

They are tensors that ``F.linear`` understands, so modules (``nn.Linear`` and the attention's
fused ``in_proj_weight``) keep their code; a weight that is sliced (a depformer's per-step
weights, a cross-attention's split in-projection) is left as it is. Converted models are for
inference only: their state_dict no longer holds plain tensors.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core import kernels
from services.core.kernels import int8 as int8_kernel
from services.core.transformer import MultiheadAttention

QUANTIZE_MODES = ("int8", "int8-weight")
_INT8_ALIGN = 16  # torch._weight_int8pack_mm is wrong for input widths not a multiple of 16


class _LinearWeight(Tensor):
    """A weight in a kernel's own format: ``F.linear`` on it runs ``cls.linear``; other
    functions run on the tensor as it is."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            return cls.linear(x, weight, args[2] if len(args) > 2 else kwargs.get("bias"))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @staticmethod
    def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise TypeError("a _LinearWeight subclass defines its linear")


class _OpaqueWeight(_LinearWeight):
    """A shape-only wrapper around an opaque packed weight: ``F.linear`` is all it supports."""

    def __init__(self, weight: Tensor):
        super().__init__()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise TypeError(f"{func} is not defined on a packed inference weight ({cls.__name__})")


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 q [out, in], fp32 scales [out]) with ``weight ~= q * scales[:, None]``: one
    symmetric scale per output row, the row's largest magnitude mapped to 127."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Weight(_LinearWeight):
    """An int8 [out, in] weight with per-row ``scales`` [out]; only ``F.linear`` is defined on
    it (other functions see the raw int8 values)."""

    scales: Tensor

    @staticmethod
    def quantize(weight: Tensor, compute_dtype: torch.dtype = torch.bfloat16) -> Int8Weight:
        q, scales = quantize_rows(weight)
        out = q.as_subclass(Int8Weight)
        out.scales = scales.to(compute_dtype)
        return out

    @staticmethod
    def linear(x: Tensor, weight: Int8Weight, bias: Tensor | None) -> Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(weight.scales.dtype)
        out = torch._weight_int8pack_mm(flat, weight.as_subclass(Tensor), weight.scales)
        out = out.view(*x.shape[:-1], -1).to(x.dtype)
        return out if bias is None else out + bias


class DynamicInt8Weight(_OpaqueWeight):
    """Int8 weights prepacked for torch's dynamic-quantization linear (``packed``, an opaque
    object); only ``F.linear`` is defined on it."""

    packed: object

    @staticmethod
    def __new__(cls, weight: Tensor) -> DynamicInt8Weight:
        q, scales = quantize_rows(weight)
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated, the kernel is not
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(q, scales.double(), zero, 0)
            packed = torch.ops.quantized.linear_prepack(qweight, None)
        out = Tensor._make_wrapper_subclass(cls, weight.shape, dtype=weight.dtype,
                                            device=weight.device)
        out.packed = packed
        return out

    @staticmethod
    def linear(x: Tensor, weight: DynamicInt8Weight, bias: Tensor | None) -> Tensor:
        # reduce_range: 7-bit activations, safe on every x86 int8 instruction set.
        out = torch.ops.quantized.linear_dynamic(x.float(), weight.packed, True).to(x.dtype)
        return out if bias is None else out + bias


class BlockedInt8Weight(_OpaqueWeight):
    """Int8 weights with per-row fp32 scales in the blocked layout of ``int8_kernel`` (CPU,
    weight-only: activations are never quantized); only ``F.linear`` is defined on it."""

    packed: Tensor  # [ceil(out / BLOCK), in, BLOCK] int8
    scales: Tensor  # [BLOCK * blocks] fp32, zero past ``out``

    @staticmethod
    def __new__(cls, weight: Tensor) -> BlockedInt8Weight:
        q, scales = quantize_rows(weight)
        out = Tensor._make_wrapper_subclass(cls, weight.shape, dtype=weight.dtype,
                                            device=weight.device)
        out.packed, out.scales = int8_kernel.pack(q), int8_kernel.pad_scales(scales)
        return out

    def int8_values(self) -> tuple[Tensor, Tensor]:
        """(q [out, in] int8, scales [out] fp32): the weight is ``q * scales[:, None]``."""
        out = self.shape[0]
        return int8_kernel.unpack(self.packed, out), self.scales[:out]

    @staticmethod
    def linear(x: Tensor, weight: BlockedInt8Weight, bias: Tensor | None) -> Tensor:
        return int8_kernel.linear(x, weight.packed, weight.scales, bias, weight.shape[0])


class PackedWeight(_OpaqueWeight):
    """A bf16 weight in oneDNN's packed layout (an opaque tensor held in ``packed``); only
    ``F.linear`` is defined on it."""

    packed: Tensor

    @staticmethod
    def __new__(cls, weight: Tensor) -> PackedWeight:
        out = Tensor._make_wrapper_subclass(cls, weight.shape, dtype=weight.dtype,
                                            device=weight.device)
        out.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        return out

    @staticmethod
    def linear(x: Tensor, weight: PackedWeight, bias: Tensor | None) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight.packed, bias, "none", [], "")


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (dtype == torch.bfloat16 and device.type == "cpu"
            and torch.backends.mkldnn.is_available() and _cpu_packs_bf16())


@functools.cache
def _cpu_packs_bf16() -> bool:
    """Whether oneDNN packs bf16 weights on this CPU: it needs AVX-512 (bw, vl, dq) or
    AVX-NE-CONVERT, and says so only by failing; an AVX2-only CPU keeps plain weights."""
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 1)
    except RuntimeError:
        return False
    return True


def quantize_int8(module: nn.Module, mode: str = "int8",
                  compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """Int8 weights for ``module``'s linear layers, in place; returns how many. ``mode``:
    "int8" (dynamic, CPU only) or "int8-weight" (weight-only: ``BlockedInt8Weight`` on CPU
    when the kernel builds here, else ``Int8Weight``)."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; known: {QUANTIZE_MODES}")

    def convert(weight: Tensor) -> Tensor | None:
        if mode == "int8":
            if weight.device.type != "cpu":
                raise ValueError("quantize='int8' (dynamic) runs on CPU only; use 'int8-weight'")
            return DynamicInt8Weight(weight)
        if weight.device.type == "cpu" and kernels.available():
            return BlockedInt8Weight(weight)
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
        if isinstance(weight, _CONVERTED) or weight.dim() != 2:
            continue
        new = convert(weight)
        if new is not None:
            delattr(owner, name)
            owner.register_buffer(name, new)
            count += 1
    return count


_CONVERTED = (Int8Weight, DynamicInt8Weight, BlockedInt8Weight, PackedWeight)


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
