"""Two figures of the machine a benchmark runs on, so its numbers can be read against it:
main-memory read bandwidth and fp32 matrix-multiply peak, both through torch with its
current intra-op thread count.

    PYTHONPATH=. python3 bench/machine.py

Read bandwidth: the best of a few ``sum`` passes over a 256 MiB float32 tensor (far larger
than any CPU cache, and a sum does one add per 4 bytes read, so memory is the limit); bytes
read / time. GEMM peak: the best of a few 1024 x 1024 fp32 products (2 * n^3 flops each; large
enough to be compute bound, small enough to take milliseconds). Both take about a second.

(A shared roofline helper may replace this module; until then bench_serving uses it.)
"""

from __future__ import annotations

import dataclasses
import time

import torch


@dataclasses.dataclass(frozen=True)
class MachineFigures:
    read_gb_s: float  # main-memory read bandwidth, 1e9 bytes per second
    gemm_gflop_s: float  # fp32 matrix multiply, 1e9 flops per second
    threads: int  # torch intra-op threads used for both

    def describe(self) -> str:
        return (f"read bandwidth {self.read_gb_s:.1f} GB/s, fp32 GEMM peak "
                f"{self.gemm_gflop_s:.0f} GFLOP/s (torch, {self.threads} threads)")


def _best_seconds(run, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one untimed call (page faults, warm-up)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth_gb_s(mebibytes: int = 256, repeats: int = 5) -> float:
    data = torch.ones(mebibytes * (1 << 20) // 4, dtype=torch.float32)
    seconds = _best_seconds(lambda: data.sum(), repeats)
    return data.numel() * 4 / seconds / 1e9


def gemm_gflop_s(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = _best_seconds(lambda: torch.mm(a, b, out=out), repeats)
    return 2 * n**3 / seconds / 1e9


def measure() -> MachineFigures:
    return MachineFigures(read_bandwidth_gb_s(), gemm_gflop_s(), torch.get_num_threads())


if __name__ == "__main__":
    print(measure().describe())
