"""bench/bench_lm.py's full KV ring: every slot holds one of the window's positions, and the
model steps on it (the steady state of a long session, which the speed table times)."""

import torch

from bench.bench_lm import fill_ring, random_model, time_steps
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from tests.moshi_lm.conftest import tiny_config


def test_a_full_ring_shows_the_whole_window_to_the_next_step():
    cfg = tiny_config(context=12)
    generator = LMGenerator(random_model(cfg, torch.float32))
    state = generator.init_state(2, SamplingSettings.greedy())
    fill_ring(state)
    ring = state.transformer
    assert sorted(ring.positions[0].tolist()) == list(range(ring.capacity))
    codes = torch.zeros(2, cfg.num_input_codebooks, dtype=torch.long)
    with torch.inference_mode():
        generator.step(state, codes)
    # The step wrote position `capacity` over the oldest slot: the window is the last
    # `capacity` positions, all of them held.
    assert sorted(ring.positions[0].tolist()) == list(range(1, ring.capacity + 1))
    assert ring.offset.tolist() == [ring.capacity + 1] * 2


def test_time_steps_reports_each_batch():
    times = time_steps(tiny_config(), SamplingSettings.greedy(), "float32", [1, 2], steps=2)
    assert set(times) == {1, 2}
    assert all(ms > 0 and gbytes > 0 for ms, gbytes, _ in times.values())
