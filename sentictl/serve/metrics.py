"""Prometheus metrics of the HTTP door, and the ASGI middleware that counts every response."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics


class Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one test process)."""

    def __init__(self) -> None:
        # The *_created series only double the output; scrapers do not need them.
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "sentictl_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "sentictl_request_duration_seconds",
            "HTTP request latency.",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "sentictl_batch_size",
            "Texts per inference batch formed by the micro-batcher.",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.batch_tokens = Histogram(
            "sentictl_batch_tokens",
            "Tokens per inference batch (before padding).",
            registry=r,
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.inference = Histogram(
            "sentictl_inference_duration_seconds",
            "Time per inference batch (Engine.classify in the worker).",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_depth = Gauge("sentictl_queue_depth", "Texts waiting for the inference worker.", registry=r)
        self.cache_hits = Counter("sentictl_cache_hits", "Texts answered from the result cache.", registry=r)
        self.cache_misses = Counter("sentictl_cache_misses", "Texts that needed inference.", registry=r)
        self.published = Counter("sentictl_published", "Results delivered to the fan-out topic.", registry=r)
        self.publish_failures = Counter(
            "sentictl_publish_failures", "Results that could not be delivered after all retries.", registry=r
        )
        self.publish_retries = Counter("sentictl_publish_retries", "Fan-out sends retried after a failure.", registry=r)
        self.publish_pending = Gauge(
            "sentictl_publish_pending", "Results waiting for the broker's acknowledgement.", registry=r
        )
        self.ready = Gauge("sentictl_model_ready", "1 once the model is loaded.", registry=r)
        self.model = Gauge(
            "sentictl_model_info",
            "The model serving: 1 for its fingerprint, name and variant.",
            ["fingerprint", "name", "variant"],
            registry=r,
        )
        self.reloads = Counter(
            "sentictl_reloads", "Models reloaded (SIGHUP, POST /admin/reload) and switched to.", registry=r
        )
        self.reload_failures = Counter(
            "sentictl_reload_failures",
            "Reloads refused: the folder failed to verify or load; the previous model kept serving.",
            registry=r,
        )
        self.cache_failures = Counter(
            "sentictl_cache_failures",
            "Result-cache operations that failed (the texts were answered uncached).",
            ["op"],
            registry=r,
        )
        for op in ("read", "write", "damaged"):
            self.cache_failures.labels(op)
        self.open_connections = Gauge(
            "sentictl_open_connections", "Client connections holding a descriptor (--max-connections).", registry=r
        )
        self.connections_closed = Counter(
            "sentictl_connections_closed",
            "Connections the server closed itself: header/body/send timeout, shed (the oldest connection "
            "without a request in progress, to make room at the cap) or refused (503: all busy).",
            ["reason"],
            registry=r,
        )
        for reason in ("header_timeout", "body_timeout", "send_timeout", "shed", "refused"):
            self.connections_closed.labels(reason)
        self.in_progress = Gauge(
            "sentictl_requests_in_progress",
            "Classification requests in progress: /sentiment, /predict, POST /, /invocations (--max-concurrent-requests).",
            registry=r,
        )

    def show_model(self, engine: Any, previous: Any = None) -> None:
        """sentictl_model_info for the model now serving (and no longer for the previous one)."""
        if previous is not None:
            try:
                self.model.remove(*_model_labels(previous))
            except KeyError:
                pass
        self.model.labels(*_model_labels(engine)).set(1)


def _model_labels(engine: Any) -> tuple[str, str, str]:
    info = engine.info()
    return engine.fingerprint, str(info.get("name") or engine.name), str(info.get("variant"))


class MetricsMiddleware:
    """Counts every HTTP response by route and status and times it (pure ASGI, no body buffering)."""

    def __init__(self, app: Any, metrics: Metrics, routes: Collection[str]):
        self.app = app
        self.metrics = metrics
        # Unknown paths share one label, so a scanner cannot grow the series without bound.
        self.routes = frozenset(routes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
