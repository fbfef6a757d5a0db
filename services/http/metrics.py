"""``GET /metrics``: what an operator watches, in Prometheus text format.

Per engine (label ``engine``), read from ``Engine.stats()`` at scrape time, so the tick pays
for nothing but a few counters:

    moshi_engine_step_seconds               histogram of batched step times
    moshi_engine_steps_over_budget_total    steps slower than a frame (80 ms): audio falls behind
    moshi_engine_steps_total, moshi_engine_frames_total
    moshi_engine_sessions_active, moshi_engine_sessions_max
    moshi_engine_sessions_started_total, ..._rejected_total (every slot busy),
    ..._timed_out_total (idle), moshi_engine_sessions_ended_total{reason}
                                            ("ok", "cancelled", "invalid_input", ...)
    moshi_engine_queued_inputs, moshi_engine_queued_outputs   queue depths

Per protocol: ``moshi_requests_total{protocol, method, status}``: gRPC calls by method and
final status code (``GrpcCallCounter``, an interceptor), websocket calls by endpoint and
outcome (the Kyutai handlers, ``record_request``), statuses named alike (``ok``,
``invalid_argument``, ``resource_exhausted``, ...).

With ``--auth-token`` the scrape needs ``authorization: Bearer <token>``, as gRPC calls do.
Each server has its own ``CollectorRegistry`` (not prometheus_client's global one), so
several servers in one process (the tests) never clash.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from services.core.engine import STEP_MS_BUCKETS, Engine
from services.http.server import token_matches


class EngineCollector(Collector):
    """The engines' figures, read when scraped."""

    def __init__(self, engines: Sequence[Engine]):
        self.engines = list({id(e): e for e in engines}.values())

    def collect(self) -> Iterator[Metric]:
        stats = [engine.stats() for engine in self.engines]
        label = ["engine"]
        steps = HistogramMetricFamily("moshi_engine_step_seconds",
                                      "Time of one batched step of an engine", labels=label)
        for s in stats:
            cumulative, total = [], 0
            bounds = [*(f"{b / 1000:g}" for b in STEP_MS_BUCKETS), "+Inf"]
            for bound, count in zip(bounds, s.step_ms_buckets or [0] * len(bounds),
                                    strict=True):
                total += count
                cumulative.append((bound, total))
            steps.add_metric([s.name], cumulative, s.step_ms_sum / 1000)
        yield steps
        counters = {
            "steps_over_budget": ("Steps slower than one 80 ms frame", "steps_over_budget"),
            "steps": ("Batched steps", "steps"),
            "frames": ("Session frames stepped (a step steps one per session in it)", "frames"),
            "sessions_started": ("Sessions admitted", "sessions_started"),
            "sessions_rejected": ("Sessions refused: every slot busy", "sessions_rejected"),
            "sessions_timed_out": ("Sessions closed for idling", "sessions_timed_out"),
        }
        for name, (help_text, attribute) in counters.items():
            family = CounterMetricFamily(f"moshi_engine_{name}", help_text, labels=label)
            for s in stats:
                family.add_metric([s.name], getattr(s, attribute))
            yield family
        ended = CounterMetricFamily("moshi_engine_sessions_ended",
                                    "Sessions ended, by how (ok or their error)",
                                    labels=["engine", "reason"])
        for s in stats:
            for reason, count in sorted(s.sessions_ended.items()):
                ended.add_metric([s.name, reason], count)
        yield ended
        gauges = {
            "sessions_active": ("Slots in use", "active_sessions"),
            "sessions_max": ("Slots of the engine", "max_sessions"),
            "queued_inputs": ("Inputs waiting in the sessions' inboxes", "queued_frames"),
            "queued_outputs": ("Outputs not yet read by the handlers", "queued_outputs"),
        }
        for name, (help_text, attribute) in gauges.items():
            family = GaugeMetricFamily(f"moshi_engine_{name}", help_text, labels=label)
            for s in stats:
                family.add_metric([s.name], getattr(s, attribute))
            yield family


class ServerMetrics:
    """A server's metrics: ``add_routes`` serves them on the HTTP port, ``grpc_interceptor``
    counts the gRPC port's calls."""

    def __init__(self, engines: Sequence[Engine]):
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engines))
        self.requests = Counter("moshi_requests", "Requests by protocol, method and final "
                                "status", ["protocol", "method", "status"],
                                registry=self.registry)

    def record_request(self, protocol: str, method: str, status: str) -> None:
        self.requests.labels(protocol, method, status).inc()

    def grpc_interceptor(self) -> GrpcCallCounter:
        return GrpcCallCounter(lambda method, status: self.record_request("grpc", method,
                                                                          status))

    def add_routes(self, app: web.Application) -> None:
        app[METRICS] = self
        app.router.add_get("/metrics", self.scrape)

    async def scrape(self, request: web.Request) -> web.Response:
        """The metrics; with the server's token set, for ``authorization: Bearer <token>``
        only (Prometheus' ``authorization`` scrape setting), as the gRPC port asks."""
        given = request.headers.get("authorization", "")
        if not token_matches(request.app, given.removeprefix("Bearer ") if given else None):
            raise web.HTTPUnauthorized(text="/metrics needs 'authorization: Bearer <token>'")
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


METRICS = web.AppKey("metrics", ServerMetrics)


def record_request(app: web.Application, protocol: str, method: str, status: str) -> None:
    """Counts one finished request of ``protocol`` (``kyutai``, ``grpc``) to ``method`` by its
    final ``status``; nothing when the app serves no metrics."""
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.record_request(protocol, method, status)


class GrpcCallCounter(grpc.aio.ServerInterceptor):
    """Reports every call's method and final status code (``ok``, ``invalid_argument``, ...)
    once it ends. First among the interceptors, so calls refused by the others count too."""

    def __init__(self, record: Callable[[str, str], None]):
        self._record = record

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        streaming = (handler.request_streaming, handler.response_streaming)
        kind = {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}[streaming]
        inner = getattr(handler, kind)
        wrap = self._wrap_stream if handler.response_streaming else self._wrap_unary
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(wrap(inner, method), request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    def _wrap_unary(self, inner, method: str):
        async def behavior(request, context):
            code = None
            try:
                return await inner(request, context)
            except BaseException as error:
                code = _code_of(error, context)
                raise
            finally:
                self._record(method, _status_name(code or context.code()))

        return behavior

    def _wrap_stream(self, inner, method: str):
        async def behavior(request, context):
            code = None
            try:
                result = inner(request, context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:  # a handler that writes with context.write and returns
                    await result
            except BaseException as error:
                code = _code_of(error, context)
                raise
            finally:
                self._record(method, _status_name(code or context.code()))

        return behavior


def _code_of(error: BaseException, context: Any) -> grpc.StatusCode:
    """The status a call ends with when its handler raises: the aborted code, CANCELLED when
    the call was cancelled under it, else UNKNOWN (as grpc reports an uncaught error)."""
    if context.code() is not None:
        return context.code()
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _status_name(code: grpc.StatusCode | int | None) -> str:
    if code is None:
        return "ok"
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return code.name.lower()
