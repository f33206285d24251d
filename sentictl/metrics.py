"""Prometheus counters serve and the bridge share (the server stack and the Kafka clients are not loaded here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter

# What a result cache reports to its on_failure hook (ResultCache, RedisCache).
CACHE_FAILURE_OPS = ("read", "write", "damaged")


def labelled_counter(
    name: str, documentation: str, label: str, values: Iterable[str], registry: CollectorRegistry
) -> Counter:
    """A counter by one label whose known values are exported (at 0) from the start, before anything is counted."""
    from prometheus_client import Counter

    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


def cache_failures(name: str, documentation: str, registry: CollectorRegistry) -> Counter:
    """The result cache's failed operations by op ("read", "write", "damaged"): serve's and the bridge's.

    Wire it with ``cache.on_failure = lambda op: counter.labels(op).inc()``.
    """
    return labelled_counter(name, documentation, "op", CACHE_FAILURE_OPS, registry)
