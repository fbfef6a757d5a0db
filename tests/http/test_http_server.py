"""The HTTP side of the server: on the gRPC server's loop, health as gRPC reports it, its own
bind errors, HTTPS with the server's certificate."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from services.core.grpc_server import BindError, ServerOptions, create_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class Hello:
    """One route, as the websocket adapters and the page add theirs."""

    def add_routes(self, app: web.Application) -> None:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app.router.add_get("/hello", hello)


def _get(url: str, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        return reply.read()


def test_http_side_serves_routes_and_health_follows_grpc_health():
    server, _ = create_server([], options=ServerOptions(http_address="127.0.0.1:0"),
                              warm_up=False, http_routes=[Hello()])
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        assert _get(f"{base}/hello") == b"hello"
        assert json.loads(_get(f"{base}/api/health")) == {"serving": False}
        server.set_health(serving=True)
        assert json.loads(_get(f"{base}/api/health")) == {"serving": True}
    finally:
        server.stop(None).wait()
    with pytest.raises(OSError):  # stopped with the gRPC side
        _get(f"http://127.0.0.1:{server.http_port}/hello")


def test_http_port_in_use_is_a_bind_error_naming_the_flag():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match="--http-port"):
            create_server([], options=ServerOptions(http_address=f"127.0.0.1:{port}"))


def test_https_with_the_servers_certificate():
    options = ServerOptions(tls_cert_chain=(FIXTURES / "tls_localhost.crt").read_bytes(),
                            tls_private_key=(FIXTURES / "tls_localhost.key").read_bytes(),
                            http_address="127.0.0.1:0")
    server, _ = create_server([], options=options, http_routes=[Hello()])
    try:
        context = ssl.create_default_context(cafile=str(FIXTURES / "tls_localhost.crt"))
        assert _get(f"https://localhost:{server.http_port}/hello", context) == b"hello"
    finally:
        server.stop(None).wait()


def test_serve_http_port_flag_prints_its_url_and_serves():
    from tests.grpc.conftest import spawn_serve

    process, _ = spawn_serve("--builtin", "null", "--http-port", "0")
    try:
        assert process.http_port, "serve printed no 'http on' line"
        health = _get(f"http://127.0.0.1:{process.http_port}/api/health")
        assert json.loads(health) == {"serving": True}
    finally:
        process.terminate()
        process.wait(30)
