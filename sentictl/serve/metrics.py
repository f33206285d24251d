"""Prometheus metrics of the HTTP door, and the ASGI middleware that counts every response."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import cache_failures, labelled_counter

# Every metric, in the order /metrics shows them: the Metrics attribute and how it is made (given the registry).
_DEFINITIONS: dict[str, Callable[..., Counter | Gauge | Histogram]] = {
    "requests": partial(Counter, "sentictl_requests", "HTTP requests by route and status.", ["route", "status"]),
    "latency": partial(
        Histogram,
        "sentictl_request_duration_seconds",
        "HTTP request latency.",
        ["route"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    ),
    "batch_size": partial(
        Histogram,
        "sentictl_batch_size",
        "Texts per inference batch formed by the micro-batcher.",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    ),
    "batch_tokens": partial(
        Histogram,
        "sentictl_batch_tokens",
        "Tokens per inference batch (before padding).",
        buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
    ),
    "inference": partial(
        Histogram,
        "sentictl_inference_duration_seconds",
        "Time per inference batch (Engine.classify in the worker).",
        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    ),
    "queue_depth": partial(Gauge, "sentictl_queue_depth", "Texts waiting for the inference worker."),
    "cache_hits": partial(Counter, "sentictl_cache_hits", "Texts answered from the result cache."),
    "cache_misses": partial(Counter, "sentictl_cache_misses", "Texts that needed inference."),
    "published": partial(Counter, "sentictl_published", "Results delivered to the fan-out topic."),
    "publish_failures": partial(
        Counter, "sentictl_publish_failures", "Results that could not be delivered after all retries."
    ),
    "publish_retries": partial(Counter, "sentictl_publish_retries", "Fan-out sends retried after a failure."),
    "publish_pending": partial(Gauge, "sentictl_publish_pending", "Results waiting for the broker's acknowledgement."),
    "ready": partial(Gauge, "sentictl_model_ready", "1 once the model is loaded."),
    "model": partial(
        Gauge,
        "sentictl_model_info",
        "The model serving: 1 for its fingerprint, name and variant.",
        ["fingerprint", "name", "variant"],
    ),
    "reloads": partial(Counter, "sentictl_reloads", "Models reloaded (SIGHUP, POST /admin/reload) and switched to."),
    "reload_failures": partial(
        Counter,
        "sentictl_reload_failures",
        "Reloads refused: the folder failed to verify or load; the previous model kept serving.",
    ),
    "cache_failures": partial(
        cache_failures,
        "sentictl_cache_failures",
        "Result-cache operations that failed (the texts were answered uncached).",
    ),
    "open_connections": partial(
        Gauge, "sentictl_open_connections", "Client connections holding a descriptor (--max-connections)."
    ),
    "connections_closed": partial(
        labelled_counter,
        "sentictl_connections_closed",
        "Connections the server closed itself: header/body/send timeout, shed (the oldest connection "
        "without a request in progress, to make room at the cap) or refused (503: all busy).",
        "reason",
        ("header_timeout", "body_timeout", "send_timeout", "shed", "refused"),
    ),
    "in_progress": partial(
        Gauge,
        "sentictl_requests_in_progress",
        "Classification requests in progress: /sentiment, /predict, POST /, /invocations (--max-concurrent-requests).",
    ),
}


class Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one test process); see _DEFINITIONS."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_size: Histogram
    batch_tokens: Histogram
    inference: Histogram
    queue_depth: Gauge
    cache_hits: Counter
    cache_misses: Counter
    published: Counter
    publish_failures: Counter
    publish_retries: Counter
    publish_pending: Gauge
    ready: Gauge
    model: Gauge
    reloads: Counter
    reload_failures: Counter
    cache_failures: Counter
    open_connections: Gauge
    connections_closed: Counter
    in_progress: Gauge

    def __init__(self) -> None:
        # The *_created series only double the output; scrapers do not need them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = CollectorRegistry()
        for attribute, make in _DEFINITIONS.items():
            setattr(self, attribute, make(registry=self.registry))

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

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Collection[str]):
        self.app = app
        self.metrics = metrics
        # Unknown paths share one label, so a scanner cannot grow the series without bound.
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
