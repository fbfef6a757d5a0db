"""Servicer plumbing shared by every streaming RPC: config-first streams, the reader thread that
feeds a session, status codes for engine errors, cancellation.

A bidi handler is a thin generator: ``serve_stream`` checks that the first request is the
config, opens a session with it (taking a slot), feeds the remaining requests to the session
from a reader thread, and yields one response per session output. Bad input from the client
ends the call with INVALID_ARGUMENT and a message saying what was wrong; the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Protocol

import grpc
import numpy as np
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.core.aio import AsyncSession
from services.core.engine import (
    Cancelled,
    CapacityError,
    ConfigTimeout,
    EngineError,
    EngineFailure,
    EngineStopped,
    IdleTimeout,
    InvalidInput,
    Unsupported,
)
from services.core.pcm import PcmError

log = logging.getLogger(__name__)

STATUS_OF_ERROR: dict[type[Exception], grpc.StatusCode] = {
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    IdleTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    ConfigTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    EngineStopped: grpc.StatusCode.UNAVAILABLE,
    EngineFailure: grpc.StatusCode.INTERNAL,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
    PcmError: grpc.StatusCode.INVALID_ARGUMENT,
    Cancelled: grpc.StatusCode.CANCELLED,
}
CLIENT_ERRORS = (EngineError, PcmError)
# Told to a client refused for lack of a free slot (google.rpc.RetryInfo): sessions end at any
# moment, so a short back-off is worth trying.
RETRY_DELAY_SECONDS = 1


class StreamSession(Protocol):
    """An engine session, or anything that behaves like one (the dialogue pipeline)."""

    def send(self, item: Any) -> None: ...

    def finish(self) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self, error: EngineError | None = None) -> None: ...


async def abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Ends the call with the status that ``error`` stands for (raises)."""
    code = next((c for t, c in STATUS_OF_ERROR.items() if isinstance(error, t)),
                grpc.StatusCode.INTERNAL)
    if isinstance(error, CapacityError):
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=RETRY_DELAY_SECONDS)))
        status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=str(error),
                                                        details=[retry]))
        await context.abort(status.code, status.details, status.trailing_metadata)
    await context.abort(code, str(error))


def config_of(request: Any, field: str = "config") -> Any:
    """The config of a stream's first request, or InvalidInput saying what came instead."""
    kind = request.WhichOneof("request")
    if kind != field:
        raise InvalidInput(f"the first request of a stream must be the {field}, got "
                           f"{kind or 'an empty request'} before it")
    return getattr(request, field)


def check_codes(codes: np.ndarray, num_codebooks: int, cardinality: int) -> np.ndarray:
    """Codes [K, ...] from a client: the announced codebook count, every code in range."""
    if codes.shape[0] != num_codebooks:
        raise InvalidInput(f"expected {num_codebooks} codebooks per frame, got {codes.shape[0]}")
    if codes.size and (codes.min() < 0 or codes.max() >= cardinality):
        bad = codes[(codes < 0) | (codes >= cardinality)][0]
        raise InvalidInput(f"code {bad} out of range: codes are in [0, {cardinality})")
    return codes.astype(np.int64)


async def serve_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, *,
                       open_session: Callable[[Any], StreamSession],
                       to_inputs: Callable[[Any], Iterable[Any]],
                       to_response: Callable[[Any], Any | None],
                       flush_inputs: Callable[[], Iterable[Any]] = tuple
                       ) -> AsyncIterator[Any]:
    """The body of a config-first bidi RPC, as coroutines on the server's event loop.

    ``open_session(config)`` validates the config and takes a slot (raising an EngineError or
    PcmError); ``to_inputs(request)`` turns each later request into session inputs (raising on
    bad data); ``flush_inputs()`` gives the last inputs once the client half-closes;
    ``to_response(output)`` makes the response of each output (None: nothing to send). How
    long the first request may take is the server's ``config_timeout``
    (``grpc_server.RequestGuard``: the request iterator raises ConfigTimeout).
    """
    try:
        first = await anext(requests, None)
        if first is None:
            raise InvalidInput("the stream ended before its config")
        session = open_session(config_of(first))
    except CLIENT_ERRORS as error:
        await abort(context, error)
    stream = AsyncSession(session)
    # Cancellation, deadline or a dropped connection: free the slot now, not at the next read.
    context.add_done_callback(lambda _: session.close(Cancelled("the client cancelled the call")))
    reader = asyncio.ensure_future(_feed(requests, stream, to_inputs, flush_inputs))
    try:
        async for output in stream:
            response = to_response(output)
            if response is not None:
                yield response
    except CLIENT_ERRORS as error:
        await abort(context, error)
    finally:
        reader.cancel()
        session.close()


async def _feed(requests: AsyncIterator[Any], stream: AsyncSession,
                to_inputs: Callable[[Any], Iterable[Any]],
                flush_inputs: Callable[[], Iterable[Any]]) -> None:
    """Client requests -> session inputs, then half-close (a task beside the responses)."""
    try:
        async for request in requests:
            if request.WhichOneof("request") == "config":
                raise InvalidInput("a stream takes one config, in its first request only; "
                                   "got a second one")
            for item in to_inputs(request):
                await stream.send(item)
        for item in flush_inputs():
            await stream.send(item)
        stream.finish()
    except CLIENT_ERRORS as error:
        stream.close(error if not isinstance(error, PcmError) else InvalidInput(str(error)))
    except (grpc.RpcError, asyncio.CancelledError):  # the call ended under us: nothing to say
        stream.close(Cancelled("the client cancelled the call"))
    except Exception as error:  # a bug: this task is the last place that can report it
        log.exception("reading a stream failed")
        stream.close(EngineFailure(f"internal error reading the stream: {error}"))
