"""The hot path every front end shares: de-dup → cache lookup → infer misses → cache store."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from .cache import ResultCache


class Classifier(Protocol):
    """What classify_cached needs from a model (the engine's Model, or a test fake)."""

    cache_namespace: str

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]: ...


def classify_cached(model: Classifier, cache: ResultCache | None, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Results for texts in input order; repeated texts are inferred once, cached ones not at all."""
    unique = list(dict.fromkeys(texts))
    known: dict[str, dict[str, Any]] = {}
    if cache is not None and unique:
        for text, result in cache.get_many(model.cache_namespace, unique).items():
            known[text] = {**result, "text": text, "cache_hit": True}
    misses = [t for t in unique if t not in known]
    if misses:
        fresh = model.classify(misses)
        if cache is not None:
            cache.put_many(model.cache_namespace, zip(misses, fresh))
        known.update(zip(misses, fresh))
    return [known[t] for t in texts]
