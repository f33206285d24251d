"""The Engine: the one API every door calls (score, serve, bridge, bench, eval).

texts → cache lookup (model namespace = fingerprint + long-text mode, normalised text) → de-dup
→ token-budget batches → tokenizers + ONNX Runtime → cache store → typed results in input order.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import config
from .batching import length_groups
from .cache import ResultCache
from .model import Model
from .records import Verdict, check_text, from_bytes
from .results import Result


class Engine:
    """A loaded model, the shared cache (or None) and the record rules, behind one API."""

    def __init__(self, model: Model, cache: ResultCache | None = None, *, max_chars: int = config.DEFAULT_MAX_CHARS):
        self.model = model
        self.cache = cache
        self.max_chars = max_chars

    # ------------------------------------------------------------------ what the doors read
    @property
    def namespace(self) -> str:
        """The cache key space of this model, variant and long-text mode."""
        return self.model.cache_namespace

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def info(self) -> dict[str, Any]:
        """Model facts for /info and `sentictl info`."""
        return self.model.info()

    # ------------------------------------------------------------------ records
    def check(self, text: str, source: str = "-", position: int = 0) -> Verdict:
        """The verdict for a decoded text under this engine's --max-chars."""
        return check_text(text, self.max_chars, source, position)

    def check_bytes(self, raw: bytes | None, *, json_field: str | None = None, source: str = "-",
                    position: int = 0) -> Verdict:
        """The verdict for received bytes (raw text, or a field of a JSON object)."""
        return from_bytes(raw, self.max_chars, json_field=json_field, source=source, position=position)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text occupies in a batch, as the model will run it."""
        return self.model.token_counts(texts)

    # ------------------------------------------------------------------ classification
    def lookup(self, texts: Sequence[str]) -> dict[str, Result]:
        """Cached results for the texts that have one, marked cache_hit (no inference)."""
        if self.cache is None or not texts:
            return {}
        return {text: {**result, "text": text, "cache_hit": True}  # type: ignore[typeddict-item]
                for text, result in self.cache.get_many(self.namespace, list(dict.fromkeys(texts))).items()}

    def infer(self, texts: Sequence[str], lengths: Mapping[str, int] | None = None) -> list[Result]:
        """Run the model on texts (no cache lookup) and store the results; input order.

        With ``lengths`` (token counts of an arrival-order batch, as a server gathers them), the
        texts run in length groups that minimise padding plus per-run overhead; otherwise the
        model's own length-sorted token-budget batching applies.
        """
        if not texts:
            return []
        if lengths is None or self.model.provider != "cpu" or self.model.static_shape:
            results: list[Any] = self.model.classify(texts)
        else:
            results = [None] * len(texts)
            for group in length_groups([lengths.get(t, 0) for t in texts]):
                for i, result in zip(group, self.model.classify([texts[i] for i in group])):
                    results[i] = result
        if self.cache is not None:
            self.cache.put_many(self.namespace, zip(texts, results))
        return results

    def classify(self, texts: Sequence[str], lengths: Mapping[str, int] | None = None) -> list[Result]:
        """Results in input order: repeated texts are inferred once, cached ones not at all."""
        known = self.lookup(texts)
        misses = [t for t in dict.fromkeys(texts) if t not in known]
        known.update(zip(misses, self.infer(misses, lengths)))
        return [known[t] for t in texts]
