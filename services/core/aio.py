"""Engine sessions from an asyncio event loop, without a thread per session.

The engine thread calls a session's wakers whenever it delivers outputs, frees room in the
inbox or ends the session; here a waker marks the session's ``asyncio.Event`` s due, and the
coroutines wait on them. So a gRPC (``grpc.aio``) handler costs a coroutine, not a thread, and
back-pressure stays the session's bounded queues. Reaching a loop from another thread costs a
write to its self-pipe and a wake-up of its selector (``loop.call_soon_threadsafe``), so the
sessions of one loop share a ``_LoopWaker``: a tick that wakes many of them reaches the loop
once, not once per session.

Streams that are not engine sessions (the split dialogue's chain of remote streams) have no
wakers: their blocking calls run on the session's own ``executor`` (sized by whoever bounds
how many such sessions there are), else on the loop's default executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.core.engine import EndOfStream


class _LoopWaker:
    """Wakes the AsyncSessions of one event loop from other threads: the sessions woken while
    the loop has not yet run are gathered, and the loop is called once for all of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._due: dict[AsyncSession, None] = {}  # insertion-ordered set

    def wake(self, stream: AsyncSession) -> None:
        """From any thread: ``stream``'s events are set soon, on its loop."""
        with self._lock:
            first = not self._due
            self._due[stream] = None
        if first:  # else a call is already on its way and will see ``stream``
            # RuntimeError: the loop closed (the server stopped) while the engine stepped us.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._set_due)

    def _set_due(self) -> None:
        with self._lock:
            due, self._due = self._due, {}
        for stream in due:
            stream._set()


_WAKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = \
    weakref.WeakKeyDictionary()


def _waker_of(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    """The loop's one waker (made on the loop's thread, so no lock is needed here)."""
    waker = _WAKERS.get(loop)
    if waker is None:
        waker = _WAKERS[loop] = _LoopWaker(loop)
    return waker


class AsyncSession:
    def __init__(self, session: Any):
        self.session = session
        self._loop = asyncio.get_running_loop()
        self._native = hasattr(session, "try_send")
        self._executor = getattr(session, "executor", None)
        if self._native:
            self._room, self._output = asyncio.Event(), asyncio.Event()
            waker = _waker_of(self._loop)
            session.add_waker(lambda: waker.wake(self))

    def _set(self) -> None:
        self._room.set()
        self._output.set()

    async def send(self, item: Any) -> None:
        """Queues one input, waiting while the inbox is full."""
        if not self._native:
            await self._loop.run_in_executor(self._executor, self.session.send, item)
            return
        while True:
            self._room.clear()
            if self.session.try_send(item):
                return
            await self._room.wait()

    def finish(self) -> None:
        self.session.finish()

    def close(self, error: Exception | None = None) -> None:
        self.session.close(error)

    async def __aiter__(self) -> AsyncIterator[Any]:
        if not self._native:
            outputs = iter(self.session)
            end = object()
            while (item := await self._loop.run_in_executor(self._executor, next, outputs, end)) \
                    is not end:
                yield item
            return
        while True:
            self._output.clear()
            try:
                ready, item = self.session.try_receive()
            except EndOfStream:
                return
            if ready:
                yield item
            else:
                await self._output.wait()


async def run_session(session: Any, items: list[Any]) -> list[Any]:
    """Feeds ``items`` to a session while collecting its outputs; closes it at the end."""
    stream = AsyncSession(session)

    async def feed() -> None:
        for item in items:
            await stream.send(item)
        stream.finish()

    feeder = asyncio.ensure_future(feed())
    try:
        outputs = [output async for output in stream]
        await feeder  # raises what the feeder met
        return outputs
    finally:
        feeder.cancel()
        stream.close()


# Unary calls that run a whole model pass (Mimi's batch Encode / Decode) do it off the event
# loop, on a pool as small as the machine: they are bounded by their slots, not by threads.
_BLOCKING = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="model")


async def run_blocking(function: Callable[[], Any]) -> Any:
    """``function()`` on the model pool, awaited."""
    return await asyncio.get_running_loop().run_in_executor(_BLOCKING, function)
