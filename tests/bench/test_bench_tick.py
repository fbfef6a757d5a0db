"""bench/bench_tick.py on its smallest row: two null-model sessions, one timed tick."""

from bench.bench_tick import run_row


def test_one_row_of_two_null_sessions():
    row = run_row("null", 2, ticks=1, repeats=1)
    assert row["best_ms"] > 0 and row["median_ms"] >= row["best_ms"]
    # Every tick of the Moshi layout dispatches hundreds of kernels (one temporal step, eight
    # depformer steps, nine samplings, a Mimi encode) and some GEMM arithmetic.
    assert 300 < row["kernels"] < 5000
    assert row["gflop"] > 0
