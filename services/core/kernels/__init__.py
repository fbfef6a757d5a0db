"""This project's CPU kernels (C++ with AVX2 + FMA), built at first use into one extension, or
absent.

Each ``.cpp`` file of this folder defines the functions listed for it in ``SOURCES``; they are
compiled together with ``torch.utils.cpp_extension.load_inline`` (ninja and a C++ compiler
needed; the build is cached in torch's extensions directory, so only the first process on a
machine pays the ~1-2 minutes). When the CPU lacks AVX2/FMA, or the build fails, or
``MOSHI_CPU_KERNELS=0`` (or the older ``MOSHI_INT8_KERNEL=0``) is set, ``load()`` returns None
after one warning and every caller keeps torch's kernels: a model always loads and gives the
same tokens.

The Python side of each kernel (layouts, shape rules, when to use it) is a module next to this
one: ``int8`` (weight-only int8 linear), ``float_linear`` (fp32 linear at a few rows),
``attention`` (few-query attention over the ring KV cache).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

# source file -> the functions it defines (exported to Python by load_inline)
SOURCES: dict[str, tuple[str, ...]] = {
    "int8_linear.cpp": ("int8_linear",),
    "ring_attention.cpp": ("ring_attention",),
    "float_linear.cpp": ("float_linear",),
}
DISABLE_ENVS = ("MOSHI_CPU_KERNELS", "MOSHI_INT8_KERNEL")  # "0" in either: never build or use
_NAME = "moshi_cpu_kernels"
_CPU_FLAGS = ("avx2", "fma")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f
                                   if line.startswith("flags")), []))
    except OSError:
        return None


def has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX). Without it torch's
    bf16 matrix products and attention are emulated, far slower than float32."""
    flags = cpu_flags()
    return flags is not None and bool(flags & {"avx512_bf16", "amx_bf16"})


def _missing_cpu_flags() -> list[str]:
    flags = cpu_flags()
    if flags is None:  # not Linux: trust torch's own dispatch level
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
    folder = Path(__file__).parent
    # One translation unit: the files' helpers must not repeat (shared ones are in simd.h).
    sources = [(folder / name).read_text() for name in SOURCES]
    headers = [path.read_text() for path in sorted(folder.glob("*.h"))]
    functions = [f for names in SOURCES.values() for f in names]
    flags = ["-O3", "-mavx2", "-mfma", "-fopenmp"]  # OpenMP: at::parallel_for's threads
    # The name carries a hash of the sources: checkouts with other kernels (or an upgrade)
    # share torch's build cache, and one build directory per name would let a process load
    # another checkout's module, or rebuild it under a running one.
    digest = hashlib.sha256("\0".join(sources + headers + functions + flags).encode())
    return cpp_extension.load_inline(
        f"{_NAME}_{digest.hexdigest()[:12]}", cpp_sources=sources, functions=functions,
        extra_cflags=flags, extra_include_paths=[str(folder)], extra_ldflags=["-fopenmp"],
        verbose=False)


def _disabled_by() -> str | None:
    return next((env for env in DISABLE_ENVS if os.environ.get(env, "1") == "0"), None)


def load() -> ModuleType | None:
    """The compiled extension, built on the first call; None (after one warning) when it
    cannot be built here or is disabled by ``MOSHI_CPU_KERNELS=0``."""
    global _module, _tried
    if _tried:  # decided: no lock, since the kernels ask at every layer of every step
        return _module
    with _lock:
        if not _tried:
            _module = _decide()
            _tried = True  # after _module: a reader that sees True sees the outcome
        return _module


def _decide() -> ModuleType | None:
    if env := _disabled_by():
        warnings.warn(f"{env}=0: this project's CPU kernels are off; torch's kernels are used "
                      "(slower)", RuntimeWarning, stacklevel=3)
        return None
    try:
        return _build()
    except Exception as error:  # any failure: fall back, never fail the load
        log.debug("building the CPU kernels failed", exc_info=True)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.warn(f"this project's CPU kernels are unavailable ({reason[:300]}); torch's "
                      "kernels are used (slower)", RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    return load() is not None


def reset() -> None:
    """Forget the outcome of ``load`` (tests: the next call checks again)."""
    global _module, _tried
    with _lock:
        _module, _tried = None, False


def require() -> ModuleType:
    """The extension, for callers that checked ``available()``."""
    module = load()
    if module is None:
        raise RuntimeError("this project's CPU kernels are unavailable (see the warning)")
    return module
