"""This machine's limits, measured at the start of a benchmark: read bandwidth and GEMM peak.

Speed drifts by up to 2x between days on a shared machine, so a time alone says little; the
fraction of the limit it reaches drifts much less. A row's limit is the larger of its two
lower bounds, ``bytes / bandwidth`` (weights read per step) and ``flops / peak``:

    limit_ms = max(bytes / read_bw, flops / gemm_peak)     fraction = limit_ms / measured_ms

A fraction of 1.0 is the machine's limit; 0.25 means four times slower than it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Roofline:
    read_gbps: float  # GB/s, a plain read of a tensor much larger than the caches
    gemm_gflops: dict[torch.dtype, float]  # GFLOP/s of a large square matmul, per dtype

    def limit_ms(self, gbytes: float, gflop: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> float:
        peak = self.gemm_gflops.get(dtype, self.gemm_gflops[torch.float32])
        return 1e3 * max(gbytes / self.read_gbps, gflop / peak)

    def describe(self) -> str:
        peaks = ", ".join(f"{str(d).removeprefix('torch.')} {g:.0f}"
                          for d, g in self.gemm_gflops.items())
        return (f"roofline: read bandwidth {self.read_gbps:.1f} GB/s, GEMM peak GFLOP/s "
                f"{peaks} ({torch.get_num_threads()} threads)")

    def row(self, ms: float, gbytes: float, gflop: float = 0.0,
            dtype: torch.dtype = torch.float32) -> str:
        """``"<GB/s> <fraction>"`` of a step taking ``ms`` that reads ``gbytes``."""
        fraction = self.limit_ms(gbytes, gflop, dtype) / ms
        return f"{gbytes / ms * 1e3:6.1f} GB/s {fraction:5.2f}"


def _best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    # The best run: on a shared machine, the slower ones measure the other jobs.
    return min(times)


def read_bandwidth(gbytes: float = 1.0, repeats: int = 5) -> float:
    """GB/s of reading a float32 tensor of ``gbytes`` (far larger than any cache): the best of
    a plain sum and a matrix-vector product over it (on some days and CPUs one of the two
    kernels does not reach the memory's speed; the faster one is the closer bound)."""
    x = torch.ones(int(gbytes * 1e9) // 4 // 4096 * 4096)
    matrix, vector = x.view(-1, 4096), torch.ones(4096)
    seconds = min(_best_seconds(x.sum, repeats), _best_seconds(lambda: matrix @ vector, repeats))
    return x.numel() * 4 / 1e9 / seconds


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n ** 3 / 1e9 / _best_seconds(lambda: a @ b, repeats)


def measure(dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)) -> Roofline:
    with torch.inference_mode():
        return Roofline(read_bandwidth(), {d: gemm_peak(d) for d in dtypes})


def weight_gbytes(module: nn.Module) -> float:
    """GB of the parameters and buffers of ``module`` that are stored as plain tensors (packed
    weights report the bytes of their shape and dtype). An upper bound on the weights a step
    reads when every weight is used once per step."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() in seen and t.data_ptr() != 0:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total / 1e9


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)
