"""Weight-only int8 quantization of the temporal transformer: the faster CPU path.

A step of the LM at batch 1 is bound by reading the weights from memory, so storing them as
int8 (one scale per output row, symmetric) roughly halves the time against bf16. Activations
stay in bf16 and every matmul runs through torch's fused int8-weight kernel
(``torch._weight_int8pack_mm``), which dequantizes on the fly.

The quantized weight is an ``Int8Weight`` tensor that ``F.linear`` understands, so the modules
(``nn.Linear`` and the attention's fused ``in_proj_weight``) are unchanged and their code paths
are the same as in float. Only the temporal transformer and the text head are quantized: they
hold nearly all the weights read per step; the embeddings (a few rows read per step) and the
small depformer stay in float.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

QUANTIZE_MODES = ("int8",)
_ALIGN = 32  # the int8 kernel needs the input width to be a multiple of 16; keep margin


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


def quantize_int8(module: nn.Module, compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """Replaces the 2-D weights of ``module`` (``nn.Linear.weight``, attention
    ``in_proj_weight``) by ``Int8Weight``s, in place; returns how many. Every such weight must
    be used only through ``F.linear`` (not true of a depformer's per-step slices)."""
    count = 0
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if name not in ("weight", "in_proj_weight") or param.dim() != 2:
                continue
            if isinstance(sub, nn.Embedding) or param.shape[1] % _ALIGN:
                continue
            delattr(sub, name)
            sub.register_buffer(name, Int8Weight.quantize(param, compute_dtype))
            count += 1
    return count
