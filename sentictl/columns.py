"""The Python API's results as columns for a dataframe (pandas or pyarrow builds the frame; neither is needed here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Result

# Column names a label cannot take: it gets the column "scores.<label>" instead.
_TAKEN = ("label", "score", "error")


def to_columns(results: Sequence[Result], labels: Sequence[str]) -> dict[str, list[Any]]:
    """ "label", "score", one column per label (its probability), "error" (None, or the reason code):
    lists in the results' order; a refused text has None in every column but "error"."""
    columns: dict[str, list[Any]] = {"label": [r.label for r in results], "score": [r.score for r in results]}
    for label in labels:
        name = f"scores.{label}" if label in _TAKEN else label
        columns[name] = [r.scores.get(label) if r.ok else None for r in results]
    columns["error"] = [r.error for r in results]
    return columns


def is_missing(value: object) -> bool:
    """None, or a float NaN (pandas' missing value in a column of texts)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
