"""Client side of the config-first streams: a bidi call that behaves like an engine session
(``send`` / ``finish`` / iterate / ``close``), so code written against in-process sessions (the
dialogue pipeline, the CLI) runs unchanged against a remote service."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.core.engine import Cancelled, EndOfStream, EngineError, EngineFailure
from services.core.grpc_stream import STATUS_OF_ERROR

# The inverse of the server's mapping: a remote status becomes the local error it came from.
_ERROR_OF_STATUS: dict[grpc.StatusCode, type[EngineError]] = {
    code: error for error, code in STATUS_OF_ERROR.items() if issubclass(error, EngineError)}
_END = object()


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def engine_error(error: grpc.RpcError) -> EngineError:
    """The EngineError a remote status stands for, so a pipeline reports it like a local one
    (and a dialogue server passes a remote RESOURCE_EXHAUSTED on as RESOURCE_EXHAUSTED)."""
    kind = _ERROR_OF_STATUS.get(error.code(), EngineFailure)
    return kind(f"remote: {error.details()}")


class RemoteStream:
    """A config-first bidi call used like a Session: ``send(item)`` turns an item into a request
    with ``to_request``; iteration turns responses into outputs with ``from_response``."""

    def __init__(self, method: grpc.StreamStreamMultiCallable, config_request: Any,
                 to_request: Callable[[Any], Any], from_response: Callable[[Any], Any],
                 metadata: tuple[tuple[str, str], ...] | None = None, max_queue: int = 8):
        self._to_request, self._from_response = to_request, from_response
        self._requests: queue.Queue = queue.Queue(max_queue)
        self._requests.put(config_request)
        self._call = method(iter(self._requests.get, _END), metadata=metadata)
        self.error: EngineError | None = None

    def send(self, item: Any) -> None:
        request = self._to_request(item)
        while True:  # blocks while the queue is full (back-pressure), not past the call's end
            if self.error is not None:
                raise self.error
            if not self._call.is_active():
                raise Cancelled("the remote call has ended")
            try:
                self._requests.put(request, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self._requests.put(_END)

    def receive(self) -> Any:
        """The next output; EndOfStream when the call ended normally."""
        try:
            return self._from_response(next(self._call))
        except StopIteration:
            raise EndOfStream from None
        except grpc.RpcError as error:
            self.error = self.error or engine_error(error)
            raise self.error from None

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except EndOfStream:
                return

    def close(self, error: EngineError | None = None) -> None:
        self.error = self.error or error
        self._call.cancel()
