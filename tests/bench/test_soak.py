"""bench/soak.py on a few seconds of the null models (a real ``serve`` subprocess), and its
slope arithmetic on made-up samples; no timing here."""

import asyncio

import pytest

from bench.bench_serving import ProcSample, Server, kinds_of
from bench.soak import report, slope_per_minute, soak


def test_slopes_are_per_minute_after_the_first_minute():
    samples = [(t, ProcSample(cpu_seconds=t, threads=13 + (t > 30), rss_mib=1000 + 2 * t / 60))
               for t in range(0, 300, 5)]
    samples[0] = (0, ProcSample(0, 13, 5000))  # start-up, left out
    assert slope_per_minute(samples, "rss_mib") == pytest.approx(2.0)
    assert slope_per_minute(samples, "threads") == pytest.approx(0.0, abs=1e-9)


def test_a_short_soak_on_the_null_models(capsys):
    server = Server("null", 3 + 4, threads=1)
    try:
        address = server.wait_serving()
        tally, samples = asyncio.run(soak(address, server.pid, kinds_of("mix", 3), 4.0,
                                          session_seconds=1.5, every=0.5))
    finally:
        server.stop()
    assert sum(tally.errors.values()) == 0, tally.first_errors
    assert sum(tally.ended.values()) >= 6  # streams of 0.75-1.5 s, three slots, 4 s
    assert len(samples) >= 5 and all(s.threads > 1 and s.rss_mib > 10 for _, s in samples)
    report(tally, samples, 4.0)
    assert "errors 0" in capsys.readouterr().out
