"""The figures both sides of a benchmark compute: percentiles and a per-contender summary."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# The engine's own batching (length-sorted, token budget) over the whole text set, as `score` does.
BUDGET = "budget"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (nan when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # Nearest-rank: with few samples p99 is the worst one, which is the honest answer.
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[k]


def summarize(latencies: Sequence[float], pass_seconds: Sequence[float], n_texts: int) -> dict[str, Any]:
    """median/p99 per call (ms) and texts/s from the median pass."""
    median_pass = statistics.median(pass_seconds)
    return {
        "texts_per_s": n_texts / median_pass if median_pass > 0 else float("inf"),
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "calls": len(latencies),
        "passes": len(pass_seconds),
    }
