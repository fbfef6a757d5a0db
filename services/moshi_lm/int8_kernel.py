"""The weight-only int8 linear of ``int8_kernel.cpp``: built at first use, or absent.

``linear(x, packed, scales, bias, out_features)`` is ``x @ (q * scales[:, None]).T + bias``
in fp32 arithmetic, with ``q`` [N, K] int8 repacked once by ``pack`` into blocks of
``BLOCK`` output rows (see the C++ file for the layout and why). It is the fast path of one LM
step on CPU: reading each weight byte once for every row of x, close to the memory's speed.

The extension is compiled with ``torch.utils.cpp_extension.load_inline`` (ninja and a C++
compiler needed; the build is cached in torch's extensions directory, so only the first
process on a machine pays the ~1 minute). When the CPU lacks AVX2/FMA, or the build fails, or
``MOSHI_INT8_KERNEL=0`` is set, ``available()`` is False after one warning and callers keep
torch's kernels: a model always loads.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

BLOCK = 16  # output rows per block; must match BLOCK in int8_kernel.cpp
DISABLE_ENV = "MOSHI_INT8_KERNEL"  # "0": never build or use the kernel
_SOURCE = Path(__file__).with_name("int8_kernel.cpp")
_NAME = "moshi_int8_linear"
_CPU_FLAGS = ("avx2", "fma")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False


def _missing_cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: trust torch's own dispatch level
        capability = torch.backends.cpu.get_cpu_capability()
        return [] if capability in ("AVX2", "AVX512") else list(_CPU_FLAGS)
    return [flag for flag in _CPU_FLAGS if flag not in flags]


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    missing = _missing_cpu_flags()
    if missing:
        raise RuntimeError(f"the CPU lacks {', '.join(missing)}")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not installed")
    flags = ["-O3", "-mavx2", "-mfma", "-fopenmp"]  # OpenMP: at::parallel_for's threads
    return cpp_extension.load_inline(
        _NAME, cpp_sources=[_SOURCE.read_text()], functions=["int8_linear"],
        extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)


def load() -> ModuleType | None:
    """The compiled extension, built on the first call; None (after one warning) when it
    cannot be built here or is disabled by ``MOSHI_INT8_KERNEL=0``."""
    global _module, _tried
    with _lock:
        if not _tried:
            _tried = True
            if os.environ.get(DISABLE_ENV, "1") == "0":
                warnings.warn(f"{DISABLE_ENV}=0: the int8 CPU kernel is off; torch's int8 "
                              "kernels are used (slower)", RuntimeWarning, stacklevel=2)
            else:
                try:
                    _module = _build()
                except Exception as error:  # any failure: fall back, never fail the load
                    log.debug("building the int8 CPU kernel failed", exc_info=True)
                    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    warnings.warn(f"the int8 CPU kernel is unavailable ({reason[:300]}); torch's "
                                  "int8 kernels are used (slower)", RuntimeWarning,
                                  stacklevel=2)
        return _module


def available() -> bool:
    return load() is not None


def reset() -> None:
    """Forget the outcome of ``load`` (tests: the next call checks again)."""
    global _module, _tried
    with _lock:
        _module, _tried = None, False


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
    fp32 arithmetic, the result in x's dtype (float32 or bfloat16). Needs ``available()``."""
    module = load()
    if module is None:
        raise RuntimeError("the int8 CPU kernel is unavailable (see the warning)")
    return module.int8_linear(x, packed, scales, bias, out_features)
