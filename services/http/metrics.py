"""``/metrics``: what an operator watches, in Prometheus text format (placeholder, filled in
below by the metrics commit)."""

from __future__ import annotations

from aiohttp import web

METRICS = web.AppKey("metrics", object)


def record_request(app: web.Application, protocol: str, method: str, status: str) -> None:
    """Counts one finished request of ``protocol`` (``kyutai``, ``grpc``) to ``method`` by its
    final ``status``; nothing when the app serves no metrics."""
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.record_request(protocol, method, status)
