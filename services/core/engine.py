"""The batching engine: one thread per loaded model steps every active session together.

    handler --send--> [inbox, bounded] --+                     +--> [outbox, bounded] --> handler
    handler --send--> [inbox, bounded] --+--> Engine thread --+--> [outbox, bounded] --> handler
                                             one batched forward per tick over the slots
                                             that have input, the others masked inactive

A session holds one of ``max_sessions`` slots (a row of the model's batched streaming state) from
``Engine.open`` to its end, cancellation or idle timeout; when every slot is taken ``open`` fails
at once with ``CapacityError``. The engine resets a slot's state on its own thread before the
slot's first step, so a step in flight never races a reset.

The model side is a ``Stepper``: it owns the batched state and turns a list of (slot, input)
into one output per input (``None`` is a valid output, e.g. an LM step inside its delay; an
``Events`` list is delivered as that many outputs). The engine itself knows nothing of
tensors, only sessions, queues and timing; the per-session loops here move queue items, the
model work is one batched call.

A session ends once its client has finished and every input is stepped: the engine then asks
the stepper for the session's last outputs (``Stepper.end``, e.g. the words still open).
A config's optional ``pass_through(item)`` answers inputs that need no model step (markers)
at once, in order, so they take no tick. A *self-paced* session (its config has
``self_paced = True``: synthesis, which needs no input per step) hands its inputs to its
config as they arrive (``absorb``; ``finish`` calls ``end_input``) and is stepped whenever
its config ``can_step()``, until it is ``done``: its outbox bound paces it to its reader;
while it cannot step, ``waiting_output()`` may say so. Its config may hold inputs back in the
inbox (``wants_input`` False: it has enough to go on), so the inbox bound paces its client.

A config's optional ``accept_input(item) -> item`` checks (raising InvalidInput) or rewrites
each input on the client's side, as it is queued: a request beyond its limits is refused
before the engine does any of its work, whatever protocol it came by.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from services.core.constants import FRAME_MS

log = logging.getLogger(__name__)

# The automatic batch window's bound (seconds): half a frame, so a frame never waits more.
AUTO_WINDOW_MAX = FRAME_MS / 2 / 1000
_EMPTY = object()  # "no input this tick", distinct from a None input
_END = object()  # "the input is over": the session's last outputs are due


def parse_batch_window_ms(text: str) -> float | None:
    """A batch window as given on a command line: milliseconds >= 0, or "auto" (None, the
    engine's automatic window); ValueError with the reason otherwise."""
    if text.strip().lower() == "auto":
        return None
    try:
        ms = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number of milliseconds nor 'auto'") from None
    if not ms >= 0:  # also refuses NaN
        raise ValueError(f"{text!r} is not a window: give 0 or more milliseconds, or 'auto'")
    return ms


class EngineError(Exception):
    """Base of the errors that end a session; each maps to one gRPC status."""


class CapacityError(EngineError):
    """Every slot is taken (RESOURCE_EXHAUSTED)."""


class IdleTimeout(EngineError):
    """No input and no output read for the idle timeout (DEADLINE_EXCEEDED)."""


class ConfigTimeout(EngineError):
    """A stream's first request, its config, did not come in time (DEADLINE_EXCEEDED)."""


class EngineStopped(EngineError):
    """The engine shut down (UNAVAILABLE)."""


class EngineFailure(EngineError):
    """The model step raised: a bug (INTERNAL)."""


class InvalidInput(EngineError):
    """The client sent something the model cannot take (INVALID_ARGUMENT)."""


class Unsupported(EngineError):
    """The loaded model cannot do what was asked (UNIMPLEMENTED)."""


class Cancelled(EngineError):
    """The client went away (CANCELLED)."""


class EndOfStream(Exception):
    """Every output of a finished session has been received."""


class Events(list):
    """Several outputs of one step, delivered one by one (an empty one delivers nothing)."""


STEP = object()  # the input of a self-paced session's step

# Upper bounds (ms) of the step-time histogram's buckets (and +inf): around the 80 ms budget of
# a frame, where an operator wants resolution.
STEP_MS_BUCKETS = (5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 160.0, 320.0, 640.0, 1280.0)


def end_reason(error: EngineError | None) -> str:
    """How a session ended, as metrics count it: "ok", or its error in snake case
    ("idle_timeout", "cancelled", "invalid_input", ...)."""
    if error is None:
        return "ok"
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


class Stepper(Protocol):
    """The model side of an engine. Every method runs on the engine thread only."""

    def start(self, slots: Sequence[int], configs: Sequence[Any]) -> None:
        """Resets the state of ``slots`` and records each new session's config."""

    def step(self, slots: Sequence[int], inputs: Sequence[Any]) -> Sequence[Any]:
        """One batched step of the sessions in ``slots`` (the others stay untouched); returns
        exactly one output per input, in order."""

    # Optional: ``end(slot) -> Events``, the last outputs of a session whose input ended.


@dataclasses.dataclass(frozen=True)
class EngineStats:
    name: str
    max_sessions: int
    active_sessions: int
    sessions_started: int
    sessions_rejected: int
    sessions_timed_out: int
    steps: int
    frames: int
    step_ms_last: float
    step_ms_p50: float
    step_ms_p99: float
    mean_batch: float
    queued_frames: int
    # Since start, for /metrics: steps per STEP_MS_BUCKETS bucket (one more: slower), their
    # total time, steps over the 80 ms budget, ended sessions by end_reason.
    step_ms_buckets: tuple[int, ...] = ()
    step_ms_sum: float = 0.0
    steps_over_budget: int = 0
    sessions_ended: dict[str, int] = dataclasses.field(default_factory=dict)
    queued_outputs: int = 0

    @property
    def real_time_factor(self) -> float:
        """Median step time over the frame duration: below 1 the engine keeps up."""
        return self.step_ms_p50 / FRAME_MS


class Session:
    """One client stream on an engine slot. ``send`` / ``finish`` from the producer thread,
    iterate (or ``receive``) from the consumer thread; ``close`` from anywhere, any time."""

    def __init__(self, engine: Engine, slot: int, config: Any, max_queue: int):
        self.engine, self.slot, self.config = engine, slot, config
        self._max_queue = max_queue
        self._self_paced = bool(getattr(config, "self_paced", False))
        self._inbox: collections.deque = collections.deque()
        self._outbox: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._finished = False  # the client sent its last input
        self._ended = False  # the engine delivered the last output
        self.error: EngineError | None = None  # why the session ended early, if it did
        self.closed = False
        self.last_activity = time.monotonic()
        self._wakers: list[Callable[[], None]] = []

    def add_waker(self, waker: Callable[[], None]) -> None:
        """``waker()`` is called (from any thread, outside the session's lock) whenever an
        output arrives, the inbox gets room or the session ends: how an event loop waits
        for a session without a thread of its own (``services.core.aio``)."""
        self._wakers.append(waker)

    def _wake(self) -> None:
        for waker in self._wakers:
            waker()

    # ---- client side ----------------------------------------------------------------------

    def send(self, item: Any) -> None:
        """Queues one input; blocks while the inbox is full (back-pressure to the client)."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or len(self._inbox) < self._max_queue)
        self.try_send(item)

    def try_send(self, item: Any) -> bool:
        """Queues one input unless the inbox is full (then False: wait for a wake)."""
        with self._cond:
            if self.closed:
                raise self.error or Cancelled(f"{self.engine.name} session closed")
            if self._finished:
                raise InvalidInput("input after the end of input")
            if len(self._inbox) >= self._max_queue:
                return False
            accept = getattr(self.config, "accept_input", None)
            self._inbox.append(item if accept is None else accept(item))
            self.last_activity = time.monotonic()
        self.engine.wake()
        return True

    def finish(self) -> None:
        """No more input: iteration ends once every input sent has been stepped."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self.engine.wake()

    def try_receive(self) -> tuple[bool, Any]:
        """(True, the next output) if there is one, else (False, None); raises as
        ``receive`` does once the stream is over."""
        with self._cond:
            if not (self._outbox or self.closed or self._ended):
                return False, None
            return True, self._pop_locked()

    def receive(self, timeout: float | None = None) -> Any:
        """The next output, in order. Raises EndOfStream after the last one (when ended, or
        closed without error), the session's error if it was closed with one, TimeoutError
        on timeout."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._outbox or self.closed or self._ended, timeout)
            if not done:
                raise TimeoutError("no output in time")
            return self._pop_locked()

    def _pop_locked(self) -> Any:
        """The next output once there is one or the stream is over (the caller holds the
        lock; see ``receive``)."""
        if not self._outbox:
            if self.closed and self.error is not None:
                raise self.error
            raise EndOfStream
        if len(self._outbox) >= self._max_queue:
            # The engine skipped this session while its outbox was full (Event.set takes
            # no session lock, so calling it under ours cannot dead-lock).
            self.engine.wake()
        self.last_activity = time.monotonic()
        return self._outbox.popleft()

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except EndOfStream:
                return

    def close(self, error: EngineError | None = None) -> None:
        """Ends the session and frees its slot at once. Idempotent; the first error wins."""
        with self._cond:
            if self.closed:
                return
            self.closed, self.error = True, error
            self._inbox.clear()
            self._cond.notify_all()
        self.engine._release(self, end_reason(error))
        self._wake()

    # ---- engine side ----------------------------------------------------------------------

    def _take(self) -> Any:
        """The next input (STEP for a self-paced session that can step), _END once the input
        is over, else _EMPTY (nothing to do, or no room for the output)."""
        answered = len(self._outbox)
        item = self._take_locked()
        if len(self._outbox) != answered:
            self._wake()  # pass-through inputs were answered
        return item

    def _take_locked(self) -> Any:
        with self._cond:
            if self.closed or self._ended or len(self._outbox) >= self._max_queue:
                return _EMPTY
            if self._self_paced:
                return self._take_self_paced()
            self._answer_pass_through_locked()
            if self._inbox:
                self._cond.notify_all()
                return self._inbox.popleft()
            return _END if self._finished else _EMPTY

    def _answer_pass_through_locked(self) -> bool:
        """Answers the inputs at the head of the inbox that the model does not see (markers),
        in order, instead of giving them a tick of their own; whether there were any."""
        answer = getattr(self.config, "pass_through", None)
        answered = False
        while answer is not None and self._inbox:
            output = answer(self._inbox[0])
            if output is None:
                break
            self._inbox.popleft()
            self._outbox.extend(output if isinstance(output, Events) else (output,))
            answered = True
        if answered:
            self._cond.notify_all()
        return answered

    def _take_self_paced(self) -> Any:
        config = self.config
        if config.done:
            return _END
        return STEP if config.can_step() else _EMPTY

    def _poll(self) -> None:
        """Before each tick, on the engine thread: a session answers the markers at the head
        of its inbox (so that a marker left behind the frame of the last tick does not count
        as input ready for the next, which would defeat the batch window); a self-paced one
        takes in what its client sent (text), and says once when it waits for more."""
        if not self._self_paced:
            with self._cond:
                answered = (not (self.closed or self._ended)
                            and len(self._outbox) < self._max_queue
                            and self._answer_pass_through_locked())
            if answered:
                self._wake()
            return
        with self._cond:
            if self.closed or self._ended:
                return
            config = self.config
            absorbed = False
            while self._inbox and getattr(config, "wants_input", True):
                config.absorb(self._inbox.popleft())
                self._cond.notify_all()
                absorbed = True
            if self._finished and not self._inbox and not config.input_ended:
                config.end_input()
            if not config.done and not config.can_step():
                note = config.waiting_output()  # e.g. "waiting for text", told once per wait
                if note is not None:
                    self._outbox.append(note)
                    self._cond.notify_all()
                    absorbed = True
        if absorbed:
            self._wake()

    def _deliver(self, output: Any) -> None:
        """The outputs of a tick (and room made in the inbox): tells the client."""
        with self._cond:
            if not self.closed:
                self._outbox.extend(output if isinstance(output, Events) else (output,))
                self._cond.notify_all()
        self._wake()

    def _end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._wake()

    def _queued(self) -> int:
        return len(self._inbox)

    def _unread(self) -> int:
        return len(self._outbox)

    def _state(self) -> str:
        """"ready" (can be stepped now), "waiting" (may get input any moment) or "out"
        (ended, closed, or held back by its unread outputs)."""
        with self._cond:
            if self.closed or self._ended or len(self._outbox) >= self._max_queue:
                return "out"
            if self._self_paced:
                return "ready" if self.config.done or self.config.can_step() else "waiting"
            return "ready" if self._inbox or self._finished else "waiting"


class Engine:
    """Steps every session of one model on one thread. ``open`` admits a session."""

    def __init__(self, name: str, stepper: Stepper, max_sessions: int, *, max_queue: int = 8,
                 idle_timeout: float = 30.0, batch_window: float | None = 0.0,
                 groups: Sequence[range] | None = None, stats_window: int = 1000):
        """``batch_window`` (seconds): how long a group of slots that has a ready session may
        wait for its other sessions' input. A step costs about the same however many rows
        take part (every slot is computed, idle ones masked), so with real-time clients at
        different phases a few ms of waiting saves whole steps; 0 steps at once. None: as
        long as the last step took (at most AUTO_WINDOW_MAX), see ``window``.
        ``groups``: slot ranges the stepper batches separately (default: all slots one
        group), e.g. Mimi's encoder and decoder slots, so one never waits for the other."""
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.name, self.stepper, self.max_sessions = name, stepper, max_sessions
        self.batch_window = batch_window
        self._last_step_s = 0.0  # wall time of the last step, for the automatic window
        groups = groups or [range(max_sessions)]
        self._group_of = {slot: g for g, r in enumerate(groups) for slot in r}
        if sorted(self._group_of) != list(range(max_sessions)):
            raise ValueError(f"groups must cover slots 0..{max_sessions - 1} once each")
        self._ready_since: dict[int, float] = {}
        self.max_queue, self.idle_timeout = max_queue, idle_timeout
        self._lock = threading.Lock()
        self._free = list(range(max_sessions))
        self._sessions: dict[int, Session] = {}
        self._joining: list[Session] = []
        self._wake = threading.Event()
        self._stopped = False
        self._recent: collections.deque = collections.deque(maxlen=stats_window)
        self._counts = collections.Counter()
        self._ended = collections.Counter()  # sessions by end_reason
        self._step_buckets = [0] * (len(STEP_MS_BUCKETS) + 1)
        self._step_ms_sum = 0.0
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Closes every session (EngineStopped) and joins the thread."""
        self._stopped = True
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.close(EngineStopped(f"the {self.name} engine is shutting down"))
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def open(self, config: Any = None, among: range | None = None) -> Session:
        """Admits a session on a free slot (of ``among`` if given, else of the stepper's
        ``slots_for(config)`` if it has one: a stepper may reserve ranges of slots for kinds
        of sessions), or raises CapacityError at once."""
        if among is None and hasattr(self.stepper, "slots_for"):
            among = self.stepper.slots_for(config)
        with self._lock:
            session = Session(self, self._take_slot(among), config, self.max_queue)
            self._sessions[session.slot] = session
            self._joining.append(session)
        return session

    @contextlib.contextmanager
    def reserve(self, among: range | None = None) -> Iterator[int]:
        """Holds a slot for work done outside the engine thread (a unary batch call), so it
        counts against ``max_sessions`` like a stream; raises CapacityError when full."""
        with self._lock:
            slot = self._take_slot(among)
        try:
            yield slot
        finally:
            with self._lock:
                self._free.append(slot)

    def _take_slot(self, among: range | None) -> int:
        """The lowest free slot of ``among`` (the caller holds the lock)."""
        if self._stopped:
            raise EngineStopped(f"the {self.name} engine is shutting down")
        among = among if among is not None else range(self.max_sessions)
        free = [slot for slot in self._free if slot in among]
        if not free:
            self._counts["rejected"] += 1
            raise CapacityError(f"no free {self.name} slot (all {len(among)} in use); "
                                "retry later")
        self._counts["started"] += 1
        self._free.remove(slot := min(free))
        return slot

    def wake(self) -> None:
        self._wake.set()

    def stats(self) -> EngineStats:
        with self._lock:
            recent = list(self._recent)
            active = self.max_sessions - len(self._free)
            queued = sum(s._queued() for s in self._sessions.values())
            unread = sum(s._unread() for s in self._sessions.values())
            counts, ended = dict(self._counts), dict(self._ended)
            buckets, step_ms_sum = tuple(self._step_buckets), self._step_ms_sum
        times = np.array([t for t, _ in recent]) if recent else np.zeros(1)
        return EngineStats(
            name=self.name, max_sessions=self.max_sessions, active_sessions=active,
            sessions_started=counts.get("started", 0),
            sessions_rejected=counts.get("rejected", 0),
            sessions_timed_out=counts.get("timed_out", 0),
            steps=counts.get("steps", 0), frames=counts.get("frames", 0),
            step_ms_last=float(times[-1]), step_ms_p50=float(np.percentile(times, 50)),
            step_ms_p99=float(np.percentile(times, 99)),
            mean_batch=float(np.mean([b for _, b in recent])) if recent else 0.0,
            queued_frames=queued, step_ms_buckets=buckets, step_ms_sum=step_ms_sum,
            steps_over_budget=counts.get("over_budget", 0), sessions_ended=ended,
            queued_outputs=unread)

    def _release(self, session: Session, reason: str) -> None:
        with self._lock:
            if self._sessions.get(session.slot) is session:
                del self._sessions[session.slot]
                self._free.append(session.slot)
                self._ended[reason] += 1
                if session in self._joining:
                    self._joining.remove(session)
        self.wake()

    # ---- the engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread(self._thread.name)
        # Poll often enough to honour the idle timeout even when nothing wakes the thread.
        poll = min(1.0, self.idle_timeout / 4)
        timeout = poll
        with torch.inference_mode():
            while not self._stopped:
                self._wake.wait(timeout)
                self._wake.clear()  # before gathering: a send after this sets it again
                self._expire_idle()
                timeout = min(poll, self._tick())

    @property
    def window(self) -> float:
        """The batch window in force (seconds). Automatic (``batch_window`` None): the last
        step's duration, at most AUTO_WINDOW_MAX. A frame then waits at most one step's time
        for company, so an idle engine with cheap steps answers at once, while an engine
        whose steps are long, which would otherwise run small batches back to back as
        real-time clients' frames trickle in at different phases, spends at most about half
        its time stepping and merges them into fuller batches (fewer steps per frame period)."""
        if self.batch_window is not None:
            return self.batch_window
        return min(AUTO_WINDOW_MAX, self._last_step_s)

    def _due_groups(self, sessions: list[Session]) -> tuple[set[int], float]:
        """Groups to step now, and the seconds until a held-back group is due (inf if none).
        A group is due when one of its sessions is ready and either none of the others may
        still bring input or the group has waited ``batch_window`` since it became ready."""
        now, window = time.monotonic(), self.window
        states: dict[int, set[str]] = collections.defaultdict(set)
        for session in sessions:
            states[self._group_of[session.slot]].add(session._state())
        due, wait = set(), float("inf")
        for group, seen in states.items():
            if "ready" not in seen:
                self._ready_since.pop(group, None)
                continue
            since = self._ready_since.setdefault(group, now)
            if "waiting" not in seen or now - since >= window:
                due.add(group)
                del self._ready_since[group]
            else:
                wait = min(wait, since + window - now)
        return due, wait

    def _tick(self) -> float:
        """One step of the due groups; returns how long the thread may sleep at most."""
        with self._lock:
            joining, self._joining = self._joining, []
            sessions = list(self._sessions.values())
        if joining:
            try:
                self.stepper.start([s.slot for s in joining], [s.config for s in joining])
            except Exception as exc:  # a bug (configs are validated before open): keep serving
                log.exception("%s engine start failed", self.name)
                for session in joining:
                    session.close(EngineFailure(f"{self.name} session start failed: {exc}"))
        for session in sessions:
            session._poll()
        due, wait = self._due_groups(sessions)
        batch, ending = [], []
        for session in sessions:
            if self._group_of[session.slot] not in due:
                continue
            item = session._take()
            if item is _END:
                ending.append(session)
            elif item is not _EMPTY:
                batch.append((session, item))
        for session in ending:
            self._end_session(session)
        if not batch:
            return 0.0 if ending else wait
        started = time.perf_counter()
        try:
            outputs = self.stepper.step([s.slot for s, _ in batch], [item for _, item in batch])
        except Exception as exc:  # a failing step is a bug: end its sessions, keep serving
            log.exception("%s engine step failed", self.name)
            for session, _ in batch:
                session.close(EngineFailure(f"{self.name} step failed: {exc}"))
            return wait
        self._last_step_s = time.perf_counter() - started
        elapsed_ms = self._last_step_s * 1000
        for (session, _), output in zip(batch, outputs, strict=True):
            session._deliver(output)
        with self._lock:  # a few integer updates a tick: nothing per session
            self._recent.append((elapsed_ms, len(batch)))
            self._counts["steps"] += 1
            self._counts["frames"] += len(batch)
            self._counts["over_budget"] += elapsed_ms > FRAME_MS
            self._step_buckets[bisect.bisect_left(STEP_MS_BUCKETS, elapsed_ms)] += 1
            self._step_ms_sum += elapsed_ms
        if any(s._state() == "ready" for s, _ in batch):
            return 0.0  # more work is waiting: step again without sleeping
        return wait

    def _end_session(self, session: Session) -> None:
        """The session's input is over: its last outputs, then the end of its stream."""
        end = getattr(self.stepper, "end", None)
        try:
            if end is not None:
                session._deliver(Events(end(session.slot)))
        except Exception as exc:  # a bug: end the session, keep serving
            log.exception("%s engine end of session failed", self.name)
            session.close(EngineFailure(f"{self.name} end of session failed: {exc}"))
        session._end()

    def _expire_idle(self) -> None:
        deadline = time.monotonic() - self.idle_timeout
        with self._lock:
            idle = [s for s in self._sessions.values() if s.last_activity < deadline]
            self._counts["timed_out"] += len(idle)
        for session in idle:
            session.close(IdleTimeout(f"{self.name} session idle for more than "
                                      f"{self.idle_timeout:g} s"))


def name_os_thread(name: str) -> None:
    """Gives the calling thread ``name`` (its first 15 bytes) in the OS, so top, ps and
    /proc/PID/task/*/comm tell the engine threads from gRPC's (benchmarks split the server's
    CPU time by it). Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        PR_SET_NAME = 15  # prctl(2)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def run_session(session: Any, items: Iterable[Any],
                on_output: Callable[[Any], None] | None = None) -> list[Any]:
    """Feeds ``items`` to a session (or anything with send/finish/iteration/close) from a
    thread while collecting its outputs here (each also handed to ``on_output`` as it
    arrives), so long inputs never dead-lock on full queues; closes the session at the end."""
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for item in items:
                session.send(item)
            session.finish()
        except EngineError as error:  # the session ended early: the reader sees why
            failure.append(error)

    feeder = threading.Thread(target=feed, name="session-feeder", daemon=True)
    feeder.start()
    outputs = []
    try:
        for output in session:
            if on_output is not None:
                on_output(output)
            outputs.append(output)
    finally:
        session.close()
        feeder.join()
    if failure:
        raise failure[0]
    return outputs
