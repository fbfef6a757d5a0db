"""One websocket call over one engine session: the part every Kyutai endpoint shares.

``serve_socket`` checks the API key (a refused handshake is an HTTP 401, before the upgrade),
upgrades, runs the endpoint's body and turns what went wrong into the protocol's error
message and close code; ``pump`` is the body's core, as ``serve_stream`` is a gRPC stream's:
a reader task turns client messages into session inputs while the handler writes one or
more messages per session output. Back-pressure is the session's bounded queues on one side
and the socket's write buffer on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import WSMsgType, web

from services.core.aio import AsyncSession
from services.core.engine import Cancelled, EngineFailure, InvalidInput
from services.core.grpc_stream import CLIENT_ERRORS
from services.core.pcm import PcmError
from services.http.metrics import record_request
from services.kyutai.messages import check_auth, close_code, error_text, status_of

log = logging.getLogger(__name__)

END = object()  # returned by a reader: the client's input is over (TTS Eos)
MAX_MESSAGE_BYTES = 4 << 20  # as the gRPC port's message limit

SendError = Callable[[web.WebSocketResponse, str], Awaitable[None]]


async def serve_socket(request: web.Request, endpoint: str, send_error: SendError,
                       body: Callable[[web.WebSocketResponse], Awaitable[None]],
                       max_sessions: int | None) -> web.WebSocketResponse:
    """Upgrades ``request`` and runs ``body(ws)``. An engine or PCM error it raises is told
    with ``send_error`` and closes the socket with its code (``max_sessions``: for the
    "slots are busy" message); the call is counted in /metrics under ``endpoint``."""
    try:
        check_auth(request)
    except web.HTTPUnauthorized:
        record_request(request.app, "kyutai", endpoint, "unauthenticated")
        raise
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    error: Exception | None = None
    try:
        await body(ws)
    except CLIENT_ERRORS as raised:
        error = raised
    except ConnectionError:  # the client went away mid-write: nothing left to tell
        error = Cancelled("the client closed the socket")
    except Exception as raised:  # a bug: the client still gets an answer, the server goes on
        log.exception("%s failed", endpoint)
        error = EngineFailure(f"{endpoint} failed: {raised}")
    if not ws.closed:
        if error is not None:
            text = error_text(error, max_sessions)
            with contextlib.suppress(ConnectionError):
                await send_error(ws, text)
            # A close reason is at most 123 bytes (RFC 6455 §5.5).
            await ws.close(code=close_code(error), message=text.encode()[:123])
        else:
            await ws.close()
    record_request(request.app, "kyutai", endpoint, status_of(error))
    return ws


async def pump(ws: web.WebSocketResponse, session: Any,
               read: Callable[[WSMsgType, Any], Iterable[Any]],
               write: Callable[[Any], Awaitable[None]]) -> None:
    """Feeds ``session`` what ``read(kind, data)`` makes of each client message (``END``:
    the input is over) while ``write``-ing each output; returns when the session ends or the
    client closes the socket (closing the session), raises the session's error."""
    stream = AsyncSession(session)
    reader = asyncio.ensure_future(_read(ws, stream, read))
    try:
        async for output in stream:
            await write(output)
    finally:
        reader.cancel()
        session.close()


async def _read(ws: web.WebSocketResponse, stream: AsyncSession,
                read: Callable[[WSMsgType, Any], Iterable[Any]]) -> None:
    try:
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            for item in read(message.type, message.data):
                if item is END:
                    stream.finish()
                else:
                    await stream.send(item)
        stream.close()  # the client closed the socket: the call is over, not failed
    except CLIENT_ERRORS as error:
        stream.close(InvalidInput(str(error)) if isinstance(error, PcmError) else error)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a bug: this task is the last place that can report it
        log.exception("reading a websocket failed")
        stream.close(EngineFailure(f"internal error reading the socket: {error}"))
