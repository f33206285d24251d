"""Counters of a bridge run: the progress line and summary (BridgeStats), Prometheus (BridgeMetrics)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import BridgeError
from ..metrics import cache_failures, labelled_counter


@dataclass
class BridgeStats:
    """Counters of one bridge run, for the progress line, the summary and the metrics."""

    consumed: int = 0
    produced: int = 0
    dlq: int = 0
    poison: int = 0
    cache_hits: int = 0
    batches: int = 0
    commits: int = 0
    lag: int | None = None
    started: float = field(default_factory=time.monotonic)
    # First poll that returned records and the last commit: the busy span, without group joins or idling.
    first_record: float | None = None
    last_commit: float | None = None

    def busy_rate(self) -> float | None:
        """Records per second from the first polled record to the last commit."""
        if self.first_record is None or self.last_commit is None or self.last_commit <= self.first_record:
            return None
        return self.consumed / (self.last_commit - self.first_record)

    def line(self, rate: float | None = None) -> str:
        """The progress line: counters and a rate (since the start unless given)."""
        seconds = max(time.monotonic() - self.started, 1e-9)
        rate = self.consumed / seconds if rate is None else rate
        parts = [
            f"consumed {self.consumed}",
            f"produced {self.produced}",
            f"dlq {self.dlq}",
            f"bad {self.poison}",
            f"cache hits {self.cache_hits}",
            f"{rate:,.0f} texts/s",
        ]
        if self.lag is not None:
            parts.append(f"lag {self.lag}")
        return ", ".join(parts)


class BridgeMetrics:
    """Prometheus counters on their own registry, served on 127.0.0.1 by default."""

    def __init__(self, host: str, port: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("sentictl_bridge_consumed", "Records consumed", registry=r)
        self.produced = Counter("sentictl_bridge_produced", "Results produced", registry=r)
        self.poison = Counter(
            "sentictl_bridge_bad_records", "Records that could not be classified", ["kind"], registry=r
        )
        self.dlq = Counter("sentictl_bridge_dlq", "Records sent to the dead-letter topic", registry=r)
        self.cache_hits = Counter("sentictl_bridge_cache_hits", "Results served from the cache", registry=r)
        self.commits = Counter("sentictl_bridge_commits", "Offset commits (or committed transactions)", registry=r)
        self.lag = Gauge("sentictl_bridge_lag", "Records behind the end of the assigned partitions", registry=r)
        self.batch_seconds = Histogram("sentictl_bridge_batch_seconds", "Poll-to-commit time of one batch", registry=r)
        self.cache_failures = cache_failures(
            "sentictl_bridge_cache_failures",
            "Result-cache operations that failed (the records were classified uncached)",
            r,
        )
        self.kafka_retries = labelled_counter(
            "sentictl_bridge_kafka_retries",
            "Kafka calls that failed and were retried (connection resets, broker restarts)",
            "op",
            ("poll", "deliver", "commit", "probe"),
            r,
        )
        self.model = Gauge(
            "sentictl_bridge_model_info",
            "The model classifying: 1 for its fingerprint, name and variant",
            ["fingerprint", "name", "variant"],
            registry=r,
        )
        self.reloads = Counter("sentictl_bridge_reloads", "Models reloaded (SIGHUP) and switched to", registry=r)
        self.reload_failures = Counter(
            "sentictl_bridge_reload_failures",
            "Reloads refused: the folder failed to verify or load; the previous model kept classifying",
            registry=r,
        )
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=r)
        except OSError as exc:
            raise BridgeError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def show_model(self, model: Any, previous: Any = None) -> None:
        """sentictl_bridge_model_info for the model now classifying (and no longer for the previous one)."""
        if previous is not None:
            try:
                self.model.remove(previous.fingerprint, previous.name, previous.variant)
            except KeyError:
                pass
        self.model.labels(model.fingerprint, model.name, model.variant).set(1)

    def close(self) -> None:
        """Stop the metrics HTTP server."""
        self.server.shutdown()
