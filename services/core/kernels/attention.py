"""Few-query attention over the ring KV cache (``ring_attention.cpp``).

``attend(q, keys, values, mask)`` is ``F.scaled_dot_product_attention(q, keys, values, mask)``
for the calls of one streaming step on CPU: fp32 queries, at most ``MAX_QUERIES`` of them, a
boolean mask (or none), no autograd. There the kernel reads only the key / value slots the mask
allows (torch's reads the whole ring) and gives the same result to fp32 rounding; every other
call goes to torch unchanged (training, long non-streaming chunks, bf16 compute, CUDA).

The ring may be bf16 beside fp32 queries (``LMGenerator(kv_dtype=torch.bfloat16)``: half the
bytes a step reads); the kernel widens each element as it loads it, torch's path widens the
ring first. A bf16 model (bf16 queries) stays on torch: the bf16 parity test pins torch's
rounding of that path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from services.core import kernels

MAX_QUERIES = 4  # must match MAX_QUERIES in ring_attention.cpp
KV_DTYPES = (torch.float32, torch.bfloat16)  # the ring dtypes the kernel reads


def attend(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
    """q [B, H, T, D], keys / values [B, H, C, D], mask bool broadcasting to [B, 1, T, C]
    (True: may attend) or None -> [B, H, T, D], scale 1 / sqrt(D) as SDPA's default."""
    # Cheapest tests first: this runs for every layer at every step.
    if (q.dtype is torch.float32 and q.shape[2] <= MAX_QUERIES and keys.dtype in KV_DTYPES
            and values.dtype is keys.dtype and q.device.type == "cpu"
            and (mask is None or mask.dtype is torch.bool)
            and not (torch.is_grad_enabled()
                     and (q.requires_grad or keys.requires_grad or values.requires_grad))):
        module = kernels.load()
        if module is not None:
            batch, _, steps, dim = q.shape
            if mask is not None:
                mask = mask.expand(batch, 1, steps, keys.shape[2])
            # The kernel writes [B, T, H, D]: the layout the output projection reads next.
            out = module.ring_attention(q, keys, values, mask, 1.0 / math.sqrt(dim))
            return out.transpose(1, 2)
    if keys.dtype is not q.dtype:  # a bf16 ring beside fp32 compute
        keys, values = keys.to(q.dtype), values.to(q.dtype)
    return F.scaled_dot_product_attention(q, keys, values, mask)
