"""The HTTP side of ``serve``: an aiohttp application on the gRPC server's event loop.

Everything on this port is an adapter over the same services and engines as the gRPC port
(Kyutai's websocket protocols, Prometheus metrics, the web page): each contributes its routes
through an ``HttpRoutes``. One loop serves both ports, so a websocket session costs a coroutine,
as a gRPC stream does, and both stop together.

State the handlers share is ``app[STATE]``: health as the gRPC health service reports it, and
the bearer token.
"""

from __future__ import annotations

import dataclasses
import hmac
import ssl
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web


@dataclasses.dataclass
class ServerState:
    """Mutable: ``serving`` follows ``Server.set_health`` (a started app's keys are frozen)."""

    auth_token: str | None = None  # clients prove it as each protocol says (header, query)
    serving: bool = False


STATE = web.AppKey("state", ServerState)


class HttpRoutes(Protocol):
    """Something that serves on the HTTP port: adds its routes (and app state) to the app."""

    def add_routes(self, app: web.Application) -> None: ...


def token_matches(app: web.Application, given: str | None) -> bool:
    """Whether ``given`` is the server's token (always, when none is set); constant time."""
    expected = app[STATE].auth_token
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def _health(request: web.Request) -> web.Response:
    """``GET /api/health``: ``{"serving": bool}``, as the gRPC health service says."""
    return web.json_response({"serving": request.app[STATE].serving})


def build_app(routes: Sequence[HttpRoutes], auth_token: str | None) -> web.Application:
    app = web.Application()
    app[STATE] = ServerState(auth_token=auth_token)
    app.router.add_get("/api/health", _health)
    for part in routes:
        part.add_routes(app)
    return app


async def start_app(app: web.Application, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Listens on ``host:port`` (0: a free port), HTTPS with ``ssl_context``; returns the
    runner and the bound port."""
    # shutdown_timeout: on stop, open websockets get this long before they are closed.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), port, ssl_context=ssl_context,
                       reuse_port=False)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]
