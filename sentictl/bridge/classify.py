"""One batch of consumed records → a result for each good one, and the bad ones with the reason."""

from __future__ import annotations

from typing import Any

from ..engine import BadRecord, Engine, Record, ResultDict
from .clients import Message

# A record that cannot be classified, with the reason; a classified one, with its JSON object (None for raw input).
Bad = tuple[Message, BadRecord]
Scored = tuple[Message, Any, ResultDict]


def classify_batch(engine: Engine, messages: list[Message], json_field: str | None) -> tuple[list[Scored], list[Bad]]:
    """Check each record's bytes, classify the good ones in one call, in the order consumed.

    A record the model fails on (ONNX Runtime raised) is found by halving the batch and is bad
    (inference_error); retrying the whole batch would fail on it for ever.
    """
    good: list[tuple[Message, str, Any]] = []
    bad: list[Bad] = []
    for m in messages:
        verdict = engine.check_bytes(m.value, json_field=json_field, source=m.topic, position=m.offset)
        if isinstance(verdict, Record):
            good.append((m, verdict.text, verdict.data))
        else:
            bad.append((m, verdict))
    outcomes = engine.classify_each([text for _, text, _ in good]) if good else []
    scored: list[Scored] = []
    for (m, _text, obj), outcome in zip(good, outcomes):
        if isinstance(outcome, BadRecord):
            bad.append((m, BadRecord(outcome.reason, outcome.message, m.topic, m.offset)))
        else:
            scored.append((m, obj, outcome))
    return scored, bad
