import threading
import time
from functools import partial

import pytest

from services.core.engine import CapacityError, Engine, EngineFailure, IdleTimeout, InvalidInput
from tests.conftest import concurrently


class RunningSum:
    """A stateful toy model: each slot accumulates its inputs; the config is an offset."""

    def __init__(self, max_sessions: int):
        self.total = [0] * max_sessions
        self.offset = [0] * max_sessions
        self.batches: list[int] = []

    def start(self, slots, configs):
        if "boom" in configs:
            raise ValueError("boom")
        for slot, config in zip(slots, configs, strict=True):
            self.total[slot], self.offset[slot] = 0, config or 0

    def step(self, slots, inputs):
        if any(x == "boom" for x in inputs):
            raise ValueError("boom")
        self.batches.append(len(slots))
        # A step takes time, as a model's does: other sessions' frames queue up meanwhile,
        # so batching is observable even when the test machine is loaded.
        time.sleep(0.005)
        for slot, x in zip(slots, inputs, strict=True):
            self.total[slot] += x
        return [self.total[s] + self.offset[s] for s in slots]


@pytest.fixture
def engine():
    engine = Engine("toy", RunningSum(3), max_sessions=3, max_queue=2, idle_timeout=0.5).start()
    yield engine
    engine.stop()


def run(session, inputs):
    feeder = threading.Thread(target=lambda: ([session.send(x) for x in inputs],
                                              session.finish()))
    feeder.start()
    outputs = list(session)
    feeder.join()
    session.close()
    return outputs


def test_sessions_run_concurrently_without_cross_talk(engine):
    inputs = {k: list(range(k, k + 20)) for k in range(3)}
    sessions = {k: engine.open(config=100 * k) for k in range(3)}
    results = concurrently({k: partial(run, sessions[k], inputs[k]) for k in range(3)})
    for k in range(3):
        sums = [sum(inputs[k][: i + 1]) + 100 * k for i in range(20)]
        assert results[k] == sums
    assert max(engine.stepper.batches) > 1  # sessions really were stepped together
    assert engine.stats().frames == 60


def test_capacity_then_slot_reuse_with_fresh_state(engine):
    sessions = [engine.open() for _ in range(3)]
    with pytest.raises(CapacityError):
        engine.open()
    assert run(sessions[0], [5, 5]) == [5, 10]
    reused = engine.open()  # the closed session's slot, reset before its first step
    assert reused.slot == sessions[0].slot
    assert run(reused, [1]) == [1]
    stats = engine.stats()
    assert stats.sessions_rejected == 1 and stats.active_sessions == 2


def test_close_frees_the_slot_at_once(engine):
    sessions = [engine.open() for _ in range(3)]
    sessions[1].send(1)
    sessions[1].close()
    engine.open().close()  # no wait needed
    for s in sessions:
        s.close()
    assert engine.stats().active_sessions == 0


def test_idle_session_times_out(engine):
    session = engine.open()
    with pytest.raises(IdleTimeout):
        session.receive(timeout=5)
    assert engine.stats().sessions_timed_out == 1
    assert engine.stats().active_sessions == 0


def test_a_failing_step_ends_its_session_and_the_engine_goes_on(engine):
    bad = engine.open()
    bad.send("boom")
    with pytest.raises(EngineFailure):
        bad.receive(timeout=5)
    assert run(engine.open(), [2, 3]) == [2, 5]
    bad_start = engine.open(config="boom")
    with pytest.raises(EngineFailure):
        bad_start.receive(timeout=5)
    assert run(engine.open(), [4]) == [4]


def test_unread_outputs_hold_the_session_back_not_the_engine(engine):
    slow, fast = engine.open(), engine.open()
    for x in range(2):
        slow.send(x)
    time.sleep(0.05)
    slow.send(10)  # inbox has room again, but the outbox (2) is full: not stepped
    assert run(fast, list(range(10))) == [sum(range(i + 1)) for i in range(10)]
    slow.finish()
    assert list(slow) == [0, 1, 11]


def test_reserved_slots_count_against_capacity(engine):
    with engine.reserve(), engine.reserve():
        session = engine.open()
        assert engine.stats().active_sessions == 3
        with pytest.raises(CapacityError), engine.reserve():
            pass
        session.close()
    assert engine.stats().active_sessions == 0


def test_slot_ranges_have_their_own_capacity(engine):
    first = engine.open(among=range(0, 1))
    with pytest.raises(CapacityError):
        engine.open(among=range(0, 1))
    assert engine.open(among=range(1, 3)).slot == 1
    first.close()
    assert engine.open(among=range(0, 1)).slot == 0


def test_a_group_waits_for_its_other_sessions_not_for_other_groups():
    stepper = RunningSum(3)
    engine = Engine("toy", stepper, 3, batch_window=0.3,
                    groups=[range(0, 2), range(2, 3)]).start()
    try:
        a, b, other = engine.open(), engine.open(), engine.open()
        a.send(1)
        other.send(7)  # alone in its group: stepped at once
        assert other.receive(timeout=0.2) == 7
        time.sleep(0.05)
        b.send(2)  # within a's window: a and b go in one step
        assert (a.receive(timeout=1), b.receive(timeout=1)) == (1, 2)
        assert stepper.batches == [1, 2]
        a.send(3)  # b sends nothing more: a goes alone once the window is over
        started = time.monotonic()
        assert a.receive(timeout=1) == 4
        assert time.monotonic() - started >= 0.25
    finally:
        engine.stop()


class Checked(int):
    """A session config (an offset of 0) whose inputs are checked and rewritten as queued."""

    def accept_input(self, item):
        if item < 0:
            raise InvalidInput(f"negative input {item}")
        return 10 * item


def test_inputs_are_checked_on_the_clients_side_as_they_are_queued(engine):
    session = engine.open(Checked(0))
    with pytest.raises(InvalidInput, match="negative input -1"):
        session.send(-1)  # refused before the engine sees it: nothing queued
    assert run(session, [1, 2]) == [10, 30]


class WithMarkers(int):
    """A session config whose string inputs are markers, answered without a step."""

    def pass_through(self, item):
        return f"ack {item}" if isinstance(item, str) else None


def test_a_marker_neither_waits_for_the_window_nor_opens_it():
    """A marker needs no step: it is answered at once, and it does not start the batch
    window (else the window would run from the marker, not from the next frame, and close
    before the other session's frame: a split batch)."""
    stepper = RunningSum(2)
    engine = Engine("toy", stepper, 2, batch_window=0.3).start()
    try:
        a, b = engine.open(WithMarkers(0)), engine.open(WithMarkers(0))
        a.send(1)
        b.send(2)
        assert (a.receive(timeout=1), b.receive(timeout=1)) == (1, 2)
        a.send("m")
        started = time.monotonic()
        assert a.receive(timeout=1) == "ack m"
        assert time.monotonic() - started < 0.2  # not held for the window
        time.sleep(0.2)
        b.send(2)  # the window opens here...
        time.sleep(0.15)
        a.send(1)  # ...and a's frame comes within it
        assert (a.receive(timeout=1), b.receive(timeout=1)) == (2, 4)
        assert stepper.batches == [2, 2]
    finally:
        engine.stop()


class SlowSum(RunningSum):
    """RunningSum whose steps take 0.3 s."""

    def step(self, slots, inputs):
        time.sleep(0.3)
        return super().step(slots, inputs)


def test_the_automatic_window_is_the_last_steps_time_capped_at_half_a_frame():
    from services.core import engine as engine_module

    engine = Engine("toy", RunningSum(1), 1, batch_window=None)
    assert engine.window == 0.0  # no step yet: step at once
    engine._last_step_s = 0.012
    assert engine.window == 0.012
    engine._last_step_s = 0.5
    assert engine.window == engine_module.AUTO_WINDOW_MAX == 0.04
    engine.batch_window = 0.002  # a fixed window wins
    assert engine.window == 0.002


def test_after_a_long_step_the_automatic_window_merges_frames(monkeypatch):
    """A fresh engine steps a lone frame at once; after a 0.3 s step (cap lifted for the
    test) a frame waits for the other session's, 0.1 s later, and they share one step."""
    from services.core import engine as engine_module

    monkeypatch.setattr(engine_module, "AUTO_WINDOW_MAX", 1.0)
    stepper = SlowSum(2)
    engine = Engine("toy", stepper, 2, batch_window=None).start()
    try:
        a, b = engine.open(), engine.open()
        a.send(1)
        assert a.receive(timeout=2) == 1
        assert stepper.batches == [1]  # not held for b
        a.send(1)
        time.sleep(0.1)
        b.send(2)
        assert (a.receive(timeout=2), b.receive(timeout=2)) == (2, 2)
        assert stepper.batches == [1, 2]
    finally:
        engine.stop()
