"""The engine's typed result: what every door reports, and what the cache stores (the same dict)."""

from __future__ import annotations

from typing import TypedDict


class _ResultFields(TypedDict):
    text: str
    label: str
    score: float
    scores: dict[str, float]
    model: str
    cache_hit: bool


class ResultDict(_ResultFields, total=False):
    """One classified text as the doors answer it and the cache stores it (a plain JSON object); labels come
    from the checkpoint's id2label, in label-id order. The public API wraps it in the frozen sentictl.Result."""

    truncated: bool  # present (True) only when the text was cut to the model's limit
    logits: dict[str, float]  # the raw logits, stored in the cache; given only to a caller asking for them
    text_pair: str  # the second text of a sentence pair


def valid_result(value: object) -> bool:
    """Whether a stored value has the ResultDict shape; anything else is a cache miss, never an answer."""
    if not isinstance(value, dict):
        return False
    label, scores = value.get("label"), value.get("scores")
    return (
        isinstance(label, str)
        and is_number(value.get("score"))
        and isinstance(value.get("model"), str)
        and isinstance(scores, dict)
        and label in scores
        and all(isinstance(k, str) and is_number(v) for k, v in scores.items())
    )


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
