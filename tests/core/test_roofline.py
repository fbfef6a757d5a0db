"""The roofline arithmetic of the benchmarks (bench/roofline.py); no timing here."""

import torch

from bench.roofline import Roofline


def test_limit_is_the_larger_bound():
    roof = Roofline(read_gbps=10.0, gemm_gflops={torch.float32: 100.0, torch.bfloat16: 400.0})
    assert roof.limit_ms(1.0) == 100.0  # 1 GB at 10 GB/s
    assert roof.limit_ms(0.1, gflop=20.0) == 200.0  # 20 GFLOP at 100 GFLOP/s beats 10 ms
    assert roof.limit_ms(0.1, gflop=20.0, dtype=torch.bfloat16) == 50.0


def test_row_gives_bandwidth_and_fraction():
    roof = Roofline(read_gbps=10.0, gemm_gflops={torch.float32: 100.0})
    gbps, unit, fraction = roof.row(200.0, 1.0).split()
    assert (float(gbps), unit, float(fraction)) == (5.0, "GB/s", 0.5)
