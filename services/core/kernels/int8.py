"""The weight-only int8 linear of ``int8_linear.cpp``.

``linear(x, packed, scales, bias, out_features)`` is ``x @ (q * scales[:, None]).T + bias``
in fp32 arithmetic, with ``q`` [N, K] int8 repacked once by ``pack`` into blocks of
``BLOCK`` output rows (see the C++ file for the layout and why). It is the fast path of one LM
step on CPU: reading each weight byte once for every row of x, close to the memory's speed.
Use it only when ``services.core.kernels.available()``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from services.core import kernels

BLOCK = 16  # output rows per block; must match BLOCK in int8_linear.cpp


def pack(q: Tensor) -> Tensor:
    """[N, K] int8 -> [ceil(N / BLOCK), K, BLOCK]: block b holds rows b*BLOCK.. interleaved
    by input column; rows past N are zero."""
    n, k = q.shape
    blocks = -(-n // BLOCK)
    padded = torch.zeros(blocks * BLOCK, k, dtype=torch.int8)
    padded[:n] = q
    return padded.view(blocks, BLOCK, k).transpose(1, 2).contiguous()


def unpack(packed: Tensor, out_features: int) -> Tensor:
    """The inverse of ``pack``: the [N, K] int8 weights."""
    blocks, k, _ = packed.shape
    return packed.transpose(1, 2).reshape(blocks * BLOCK, k)[:out_features]


def pad_scales(scales: Tensor) -> Tensor:
    """Per-row scales as the kernel reads them: fp32, zero past N up to the block."""
    blocks = -(-scales.numel() // BLOCK)
    padded = torch.zeros(blocks * BLOCK, dtype=torch.float32)
    padded[:scales.numel()] = scales.float()
    return padded


def linear(x: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None,
           out_features: int) -> Tensor:
    """``scales * (x @ q.T) + bias`` with ``packed = pack(q)``, ``scales = pad_scales(...)``;
    fp32 arithmetic, the result in x's dtype (float32 or bfloat16)."""
    return kernels.require().int8_linear(x, packed, scales, bias, out_features)
