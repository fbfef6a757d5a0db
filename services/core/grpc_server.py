"""The gRPC server around the services: one port, health, reflection, engine stats, optional
bearer-token auth and TLS, keepalive for long streams.

``create_server`` builds and starts a server for already constructed services and returns
``(server, port)``; ``moshi-services serve`` (cli/serve.py) loads the models, calls it, warms
up and waits for SIGTERM. Tests call it on ``127.0.0.1:0``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import logging
import ssl
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.core import stats_pb2, stats_pb2_grpc
from services.core.engine import Engine
from services.http.metrics import ServerMetrics
from services.http.server import STATE, HttpRoutes, build_app, start_app

log = logging.getLogger(__name__)

MiB = 1 << 20
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
STATS_SERVICE = stats_pb2.DESCRIPTOR.services_by_name["EngineStats"].full_name
REFLECTION_V1_SERVICE = "grpc.reflection.v1.ServerReflection"  # newer grpcurl asks v1 first

# Dialogue streams last minutes. The server pings idle connections every 30 s so dead peers are
# found, and accepts client pings every 10 s or slower even without data in flight; clients use
# CLIENT_KEEPALIVE_OPTIONS (20 s) which stays inside that policy, so no GOAWAY too_many_pings.
SERVER_KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS: the fastest client pings accepted.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)
CLIENT_KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class BindError(OSError):
    """The server cannot listen on its address (a port in use, an address not local)."""


class GrpcService(Protocol):
    """What the server needs from each service (Mimi, LM, dialogue, ...)."""

    #: Full proto name, e.g. "services.mimi.Mimi": the health and reflection name.
    name: str

    def add_to_server(self, server: grpc.Server) -> None: ...

    def engines(self) -> Sequence[Engine]:
        """Engines this service runs (for the stats RPC); shared ones may repeat."""

    def warm_up(self) -> None:
        """Runs a few frames through the models so the first client does not pay for it."""

    def close(self) -> None:
        """Stops what the service owns (its engines)."""


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    auth_token: str | None = None  # clients send "authorization: Bearer <token>"
    tls_cert_chain: bytes | None = None  # PEM; with tls_private_key turns TLS on
    tls_private_key: bytes | None = None
    max_message_bytes: int = 4 * MiB  # gRPC's default receive limit, stated explicitly
    open_reflection: bool = False  # with auth_token: reflection answers without the token
    # host:port of the HTTP side (websockets, /metrics, the page; services.http); None: off.
    # HTTPS with the same certificate when TLS is on.
    http_address: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert_chain is not None

    @property
    def open_prefixes(self) -> tuple[str, ...]:
        """Method prefixes that need no bearer token: health always (orchestrator probes)."""
        names = [HEALTH_SERVICE] + ([reflection.SERVICE_NAME, REFLECTION_V1_SERVICE]
                                    if self.open_reflection else [])
        return tuple(f"/{name}/" for name in names)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED, before any
    handler runs (so before a slot is taken). Health stays open for load balancers."""

    def __init__(self, token: str, open_prefixes: Sequence[str] = (f"/{HEALTH_SERVICE}/",)):
        self._expected = f"Bearer {token}".encode()
        self._open_prefixes = tuple(open_prefixes)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open_prefixes):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return handler
        message = ("missing bearer token: send 'authorization: Bearer <token>' metadata"
                   if not given else "wrong bearer token")
        return _refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, message)


def _refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
                      message: str) -> grpc.RpcMethodHandler:
    async def refuse(request, context):
        await context.abort(code, message)

    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}
    return make[handler.request_streaming, handler.response_streaming](
        refuse, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class StatsServicer(stats_pb2_grpc.EngineStatsServicer):
    def __init__(self, engines: Sequence[Engine]):
        self._engines = list({id(e): e for e in engines}.values())

    async def GetStats(self, request, context):
        figures = []
        for engine in self._engines:
            s = engine.stats()
            figures.append(stats_pb2.EngineFigures(
                name=s.name, max_sessions=s.max_sessions, active_sessions=s.active_sessions,
                sessions_started=s.sessions_started, sessions_rejected=s.sessions_rejected,
                sessions_timed_out=s.sessions_timed_out, steps=s.steps, frames=s.frames,
                step_ms_last=s.step_ms_last, step_ms_p50=s.step_ms_p50,
                step_ms_p99=s.step_ms_p99, mean_batch=s.mean_batch,
                real_time_factor=s.real_time_factor, queued_frames=s.queued_frames))
        return stats_pb2.GetStatsResponse(engines=figures)


class Server:
    """A ``grpc.aio`` server on an event-loop thread of its own, driven from ordinary threads:
    its handlers are coroutines (a session costs no thread), the engines run on theirs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 server: grpc.aio.Server, health_servicer: health.aio.HealthServicer,
                 names: Sequence[str], http: tuple[web.AppRunner, int] | None = None):
        self._loop, self._thread, self._server = loop, thread, server
        self._health, self._names = health_servicer, list(names)
        self._http = http[0] if http else None
        #: The HTTP side's bound port (None without ``ServerOptions.http_address``).
        self.http_port = http[1] if http else None

    def _run(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def set_health(self, serving: bool) -> None:
        """Every service name and "" (the whole server) to SERVING or NOT_SERVING."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)

        async def set_all() -> None:
            for name in ["", *self._names]:
                await self._health.set(name, status)
            if self._http is not None:
                self._http.app[STATE].serving = serving

        self._run(set_all()).result()

    def stop(self, grace: float | None) -> threading.Event:
        """Stops accepting calls, ends running ones after ``grace`` seconds, then the loop;
        returns an event set once stopped (``.wait()``)."""
        stopped = threading.Event()

        async def stop() -> None:
            if self._http is not None:
                await self._http.cleanup()
            await self._server.stop(grace)
            stopped.set()

        if self._loop.is_closed() or not self._thread.is_alive():
            stopped.set()
            return stopped
        self._run(stop()).add_done_callback(
            lambda _: self._loop.call_soon_threadsafe(self._loop.stop))
        return stopped


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The server's event loop until ``Server.stop``; then what is left of its calls is
    cancelled and the loop closed, so nothing of them outlives the server."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def create_server(services: Sequence[GrpcService], address: str = "127.0.0.1:0",
                  options: ServerOptions | None = None, warm_up: bool = True,
                  http_routes: Sequence[HttpRoutes] = ()) -> tuple[Server, int]:
    """Builds and starts a server for ``services`` on ``address``; returns it and its port.
    With ``options.http_address`` the HTTP side (``http_routes``) listens there too, on the
    same event loop (its port: ``Server.http_port``).

    Health starts NOT_SERVING; with ``warm_up`` the services are warmed up here and health
    turns SERVING before returning. ``serve`` passes ``warm_up=False`` to report NOT_SERVING
    while it warms up, then calls ``Server.set_health``.
    """
    options = options or ServerOptions()
    engines = [e for s in services for e in s.engines()]
    # /metrics on the HTTP side; its call counter sees every gRPC call, refused ones too.
    metrics = ServerMetrics(engines)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name="grpc-aio", daemon=True)
    thread.start()

    async def build() -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
        interceptors = [metrics.grpc_interceptor()] + (
            [BearerTokenInterceptor(options.auth_token, options.open_prefixes)]
            if options.auth_token else [])
        server = grpc.aio.server(
            interceptors=interceptors,
            # so_reuseport 0: a second server on a port in use fails to bind instead of
            # sharing it (and splitting calls between an authenticated and an open server).
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", options.max_message_bytes),
                     ("grpc.max_send_message_length", options.max_message_bytes),
                     *SERVER_KEEPALIVE_OPTIONS])
        health_servicer = health.aio.HealthServicer()
        for name in ["", *(s.name for s in services)]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        stats_pb2_grpc.add_EngineStatsServicer_to_server(StatsServicer(engines), server)
        for service in services:
            service.add_to_server(server)
        names = [s.name for s in services] + [HEALTH_SERVICE, STATS_SERVICE,
                                             reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        try:
            if options.tls:
                credentials = grpc.ssl_server_credentials(
                    [(options.tls_private_key, options.tls_cert_chain)])
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind": said below, with what to do
            port = 0
        if port:
            await server.start()
        return server, health_servicer, port

    async def build_http() -> tuple[web.AppRunner, int]:
        host, _, http_port = options.http_address.rpartition(":")
        ssl_context = (_ssl_context(options.tls_cert_chain, options.tls_private_key)
                       if options.tls else None)
        app = build_app([*http_routes, metrics], options.auth_token)
        try:
            return await start_app(app, host, int(http_port), ssl_context)
        except OSError as e:
            raise BindError(f"cannot listen on {options.http_address}: {e.strerror}; pick "
                            "another --http-port") from None

    try:
        aio_server, health_servicer, port = asyncio.run_coroutine_threadsafe(
            build(), loop).result()
    except Exception:
        loop.call_soon_threadsafe(loop.stop)
        raise
    if port == 0:
        loop.call_soon_threadsafe(loop.stop)
        raise BindError(f"cannot listen on {address}: the port is in use (or the address is "
                        "not this machine's); pick another --port")
    http = None
    if options.http_address is not None:
        try:
            http = asyncio.run_coroutine_threadsafe(build_http(), loop).result()
        except Exception:
            asyncio.run_coroutine_threadsafe(aio_server.stop(None), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            raise
    server = Server(loop, thread, aio_server, health_servicer, [s.name for s in services],
                    http)
    if warm_up:
        for service in services:
            service.warm_up()
        server.set_health(serving=True)
    return server, port


def _ssl_context(cert_chain: bytes, private_key: bytes) -> ssl.SSLContext:
    """A server-side context from PEM bytes (``ssl`` loads only files: a private temp dir)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert.write_bytes(cert_chain)
        key.touch(mode=0o600)
        key.write_bytes(private_key)
        context.load_cert_chain(cert, key)
    return context


def create_channel(address: str, root_certificates: bytes | None = None,
                   tls: bool = False) -> grpc.Channel:
    """A client channel with keepalive settings that match the server's policy."""
    options = [*CLIENT_KEEPALIVE_OPTIONS,
               ("grpc.max_receive_message_length", 64 * MiB)]
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)
