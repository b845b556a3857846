"""Prometheus metrics of one app (its own registry, so that several apps can live in one process).

* ``reczero_requests_total{route,method,code}`` and ``reczero_request_errors_total{route,code}``
  (code >= 400): the route is the matched path template (``/v1/predict``; for a request refused
  before routing, such as a 413, its path when it is one of the app's), ``other`` for paths that
  match no route, so a scan of random URLs cannot grow the label set.
* ``reczero_request_latency_seconds{route}``: until the last byte of the answer is sent.
* ``reczero_batch_size{model}`` and ``reczero_batch_seconds{model}``: each model call of the
  micro-batcher, how many requests it served and how long it ran.

:class:`MetricsMiddleware` is a plain ASGI middleware (it sees a streamed answer to its end, which
``BaseHTTPMiddleware`` would not); it is also the last resort for an exception no handler took: it
answers 500 with a generic message and logs the traceback, so none ever reaches a client.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from reczero.serve.errors import error_body

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("reczero_requests", "HTTP requests answered, by route, method and status code.",
                                ["route", "method", "code"], registry=self.registry)
        self.errors = Counter("reczero_request_errors", "HTTP requests answered with a status code >= 400.",
                              ["route", "code"], registry=self.registry)
        self.latency = Histogram("reczero_request_latency_seconds", "Time from request to the answer's last byte.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("reczero_batch_size", "Requests served by one model call (micro-batching).",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("reczero_batch_seconds", "Duration of one batched model call.",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_batch(self, model: str):
        def observe(size: int, seconds: float) -> None:
            self.batch_size.labels(model).observe(size)
            self.batch_seconds.labels(model).observe(seconds)
        return observe

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request; turns an unhandled exception into a generic 500."""

    def __init__(self, app: Any, metrics: ServeMetrics, paths: frozenset[str] = frozenset()) -> None:
        self.app, self.metrics = app, metrics
        self.paths = paths      # the app's own fixed paths: the label of a request refused before routing (413)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = {"code": 500, "started": False}

        async def send_observed(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["code"], state["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not state["started"]:
                body = json.dumps(error_body("internal server error; the server log has the details",
                                             "server_error", 500)).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            state["code"] = 500
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope.get("path") if scope.get("path") in self.paths else "other"
            code = str(state["code"])
            self.metrics.requests.labels(route, scope.get("method", ""), code).inc()
            if state["code"] >= 400:
                self.metrics.errors.labels(route, code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
