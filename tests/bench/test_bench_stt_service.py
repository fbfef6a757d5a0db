"""bench/bench_stt_service.py on the built-in tiny STT model: real gRPC calls through the ASR
service, figures for each number of streams."""

import math

from bench.bench_stt_service import models, run


def test_rows_for_each_number_of_streams_on_the_builtin_stt_model():
    model, mimi = models("builtin", "int8")
    rows = list(run(model, mimi, [1, 2], seconds=0.8, read_gbps=10.0))
    assert [r.streams for r in rows] == [1, 2]
    for row in rows:
        assert row.rtf > 0 and math.isclose(row.throughput, row.streams / row.rtf)
        assert row.step_ms > 0 and row.gbytes > 0
        assert math.isclose(row.fraction, row.gbps / 10.0)
