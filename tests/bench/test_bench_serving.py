"""bench/bench_serving.py end to end on its smallest row: a real ``serve --builtin null``
subprocess, one real-time dialogue session for one second, figures read from /proc."""

import math
import os

import pytest

from bench.bench_serving import format_row, kinds_of, proc_sample, run_row


def test_proc_sample_reads_this_process():
    sample = proc_sample(os.getpid())
    assert sample.threads >= 1
    assert sample.rss_mib > 1
    assert sample.cpu_seconds > 0


def test_mix_takes_each_kind_in_turn():
    assert kinds_of("mix", 5) == ["asr", "tts", "dialogue", "asr", "tts"]
    assert kinds_of("asr", 2) == ["asr", "asr"]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_one_dialogue_row_on_the_null_model():
    row = run_row("null", "dialogue", 1, seconds=1.0, threads=1)
    assert row.errors == 0, row.first_error
    # Frames answered inside the 0.8 s window (10 at real time; a loaded machine may give a few
    # less), each with a measured latency, and the server's own CPU spent on them.
    assert row.frames >= 3
    assert math.isfinite(row.p50_ms) and row.p50_ms > 0
    assert row.cpu_us_per_frame > 0
    assert row.threads_start >= 2 and row.threads_peak >= row.threads_start
    assert row.rss_peak_mib >= row.rss_start_mib > 10
    # The engine stepped the one session about once per frame period (12.5 per second).
    assert 1 <= row.ticks_per_s < 100 and row.mean_batch == pytest.approx(1.0)
    assert format_row(row).startswith("null   dialogue    1")
    # The engine thread (named in the OS) did part of the work, not all of it.
    assert 0 < row.engine_us_per_frame < row.cpu_us_per_frame


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_the_transport_floor_answers_sparse_markers():
    """--models floor: the ASR protocol with no engine; with a marker every 4 frames each
    acknowledgement completes 4 frames."""
    row = run_row("floor", "asr", 2, seconds=1.5, threads=None, marker_every=4)
    assert row.errors == 0, row.first_error
    assert row.frames >= 8 and row.frames % 4 == 0
    assert math.isfinite(row.p50_ms) and row.cpu_us_per_frame > 0
    assert row.engine_us_per_frame == 0  # no engine thread
    assert math.isnan(row.mean_batch)  # nor engine steps


def test_null_presets_keep_the_frame_grid_and_fit_each_other():
    import torch

    from services.mimi.loading import build_random_mimi
    from services.moshi_lm.config import preset

    mimi, lm = build_random_mimi("null"), preset("null")
    assert mimi.frame_size == 1920 and mimi.sample_rate == 24_000
    with torch.inference_mode():
        codes = mimi.encode(0.1 * torch.randn(2, 1, 3 * 1920))
    assert codes.shape == (2, 8, 3)
    assert int(codes.max()) < lm.card == mimi.cfg.cardinality
    assert lm.num_input_codebooks == 8 and lm.dep_q == 8
