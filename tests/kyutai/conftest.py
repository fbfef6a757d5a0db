"""A real server (127.0.0.1, port 0) with `serve`'s services on the built-in tiny models and
its HTTP side (the Kyutai endpoints), shared by the tests of a module."""

from __future__ import annotations

import dataclasses

import grpc
import msgpack
import pytest

from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.wiring import ModelOptions, build_services, close_all, http_routes

TEXT_DELAY, AUDIO_DELAY = 3, 4  # frames; small, so the tiny model's sessions stay short
OPTIONS = ModelOptions(max_sessions=4, asr_text_delay=TEXT_DELAY, tts_audio_delay=AUDIO_DELAY)
TOKEN = "sesame"


@dataclasses.dataclass(frozen=True)
class Served:
    channel: grpc.Channel
    http_port: int
    services: list

    def url(self, path: str, **query) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.http_port}{path}" + (f"?{params}" if params else "")


def serve(options: ModelOptions = OPTIONS, token: str | None = None):
    services = build_services(None, options)
    server, port = create_server(
        services, "127.0.0.1:0",
        ServerOptions(http_address="127.0.0.1:0", auth_token=token),
        http_routes=http_routes(services))
    channel = create_channel(f"127.0.0.1:{port}")
    return Served(channel, server.http_port, services), server


@pytest.fixture(scope="module")
def served():
    running, server = serve()
    yield running
    running.channel.close()
    server.stop(None).wait()
    close_all(running.services)


def pack(kind: str, **fields) -> bytes:
    """A client message exactly as Kyutai's clients send it."""
    return msgpack.packb({"type": kind, **fields})


def unpack(data: bytes) -> dict:
    return msgpack.unpackb(data)
