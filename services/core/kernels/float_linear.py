"""The fp32 linear of ``float_linear.cpp`` for a few rows, on torch's own [N, K] weights.

``linear(x, weight, bias)`` is ``F.linear`` and ``addmm(bias, x, weight, beta, alpha)`` is
``torch.addmm(bias, x, weight.t(), beta=beta, alpha=alpha)``; both take the kernel when it
wins (CPU, float32, at most ``MAX_ROWS`` rows of x, no autograd, kernels built) and torch
otherwise, so callers need no second path. Results equal torch's to fp32 rounding (another
summation order), independent of the thread count.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Parameter
from torch.nn import functional as F

from services.core import kernels

# Rows of x up to which the kernel beats torch's GEMM on an AVX2 CPU. On 1 thread: 2.0-2.9x
# faster at 2-4 rows and 1.6-2.0x at 8 ([512, 2048]-[2048, 6144] weights); at 16 rows still
# 1.1-1.7x (2026-12-03, [16, 512]..[16, 3072] x 512..6144 outputs), narrowing as each 4 rows
# more take one more pass over the weights, where torch's blocked GEMM reuses them better.
# On 2 threads the gap is wider: torch's GEMM at few rows barely uses the second one.
MAX_ROWS = 16


_PLAIN = (Tensor, Parameter)


def _usable(x: Tensor, weight: Tensor) -> bool:
    # Plain tensors only: the LM's int8 / bf16 weights are subclasses with their own F.linear.
    return (type(weight) in _PLAIN and type(x) is Tensor and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.is_cpu and weight.is_cpu
            and x.dim() >= 1 and x.numel() <= MAX_ROWS * x.shape[-1]
            and weight.dim() == 2 and weight.stride(1) == 1
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through the kernel at a few rows."""
    if _usable(x, weight) and (bias is None or not (bias.requires_grad
                                                    and torch.is_grad_enabled())):
        module = kernels.load()
        if module is not None:
            return module.float_linear(x, weight, bias, 1.0, 1.0)
    return F.linear(x, weight, bias)


def addmm(bias: Tensor, x: Tensor, weight: Tensor, beta: float = 1.0,
          alpha: float = 1.0) -> Tensor:
    """``torch.addmm(bias, x, weight.t(), beta=beta, alpha=alpha)`` for bias [N], x [M, K] and
    weight [N, K], through the kernel at a few rows."""
    if _usable(x, weight) and bias.dim() == 1 and bias.dtype == torch.float32 and \
            not (torch.is_grad_enabled() and bias.requires_grad):
        module = kernels.load()
        if module is not None:
            return module.float_linear(x, weight, bias, beta, alpha)
    return torch.addmm(bias, x, weight.t(), beta=beta, alpha=alpha)
