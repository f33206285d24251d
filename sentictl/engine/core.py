"""The Engine: the one API every door calls (score, serve, bridge, bench, eval).

texts → cache lookup (model namespace = fingerprint + long-text mode, normalised text) → de-dup
→ token-budget batches → tokenizers + ONNX Runtime → cache store → typed results in input order.

Besides plain texts the engine takes :class:`~sentictl.engine.records.Input`s (sentence pairs, texts
cut at their start), each kind cached in a key space of its own; results carry their raw logits
to whoever asks for them (``logits=True``) and nobody else.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Mapping, Sequence

from .. import config
from .batching import length_groups
from .cache import ResultCache
from .model import Model, is_runtime_error, runtime_message
from ..errors import InferenceError
from .records import INFERENCE_ERROR, BadRecord, Input, Verdict, check_pair, check_text, from_bytes
from .results import Result

# What the engine classifies: a text (cut at its end when too long), or an Input.
Item = str | Input


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

    def check_pair(self, first: str, second: str) -> tuple[str, str] | BadRecord:
        """The verdict for a sentence pair (both normalised; empty only when both are blank)."""
        return check_pair(first, second, self.max_chars)

    def item(self, text: str, pair: str | None = None, truncate_from: str = "right") -> Item:
        """What to classify for a text (or pair) and the side a too-long input loses: the plain text
        when that is how the engine classifies it anyway (cut at the right, or chunked whole)."""
        if pair is None and (truncate_from == "right" or self.model.long == "chunk"):
            return text
        return Input(text, pair, truncate_from)

    def token_counts(self, texts: Sequence[Item]) -> list[int]:
        """Tokens each text (or Input) occupies in a batch, as the model will run it."""
        if all(type(t) is str for t in texts):
            return self.model.token_counts(texts)  # type: ignore[arg-type]
        counts = self.input_lengths(texts)
        plain = [i for i, t in enumerate(texts) if type(t) is str]
        for i, n in zip(plain, self.model.token_counts([texts[i] for i in plain])):  # type: ignore[misc]
            counts[i] = n
        cap = self.model.max_length
        return [n if type(t) is str else min(n, cap) for t, n in zip(texts, counts)]

    def input_lengths(self, items: Sequence[Item]) -> list[int]:
        """Tokens each text or Input holds before any truncation (special tokens included)."""
        counts = [0] * len(items)
        plain = [i for i, t in enumerate(items) if type(t) is str]
        for i, ids in zip(plain, self.model.encode([items[i] for i in plain])):  # type: ignore[misc]
            counts[i] = len(ids) + 2  # [CLS] ids [SEP], as the model runs a text
        others = [i for i, t in enumerate(items) if type(t) is not str]
        for i, n in zip(others, self.model.input_lengths([_raw(items[i]) for i in others])):
            counts[i] = n
        return counts

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[Any]:
        """``tokenizers`` Encodings of texts as the model sees them (special tokens included), uncut."""
        return self.model.tokenize(texts, add_special_tokens)

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The texts of token id sequences."""
        return self.model.decode(ids, skip_special_tokens)

    # ------------------------------------------------------------------ classification
    def _space(self, item: Item) -> str:
        """The cache key space of an item: the model's namespace, and an Input's kind."""
        return self.namespace if type(item) is str else f"{self.namespace}:{item.kind}"  # type: ignore[union-attr]

    def lookup(self, texts: Sequence[Item], *, logits: bool = True) -> dict[Any, Result]:
        """Cached results for the texts (or Inputs) that have one, marked cache_hit (no inference);
        logits=False leaves out their logits (see classify)."""
        if self.cache is None or not texts:
            return {}
        if all(type(t) is str for t in texts):
            found = self.cache.get_many(self.namespace, list(dict.fromkeys(texts)))
            if logits:
                return {text: {**result, "text": text, "cache_hit": True}  # type: ignore[typeddict-item]
                        for text, result in found.items()}
            out: dict[Any, Result] = {}
            for text, result in found.items():
                hit = out[text] = {**result, "text": text, "cache_hit": True}  # type: ignore[typeddict-item]
                hit.pop("logits", None)
            return out
        found_items: dict[Any, Result] = {}
        for space, group in _by_space(self, texts).items():
            keys = {_key(item): item for item in group}
            for key, result in self.cache.get_many(space, list(keys)).items():
                found_items[keys[key]] = _as_found(keys[key], result if logits else _without_logits(result))
        return found_items

    def infer(self, texts: Sequence[Item], lengths: Mapping[Any, int] | None = None) -> list[Result]:
        """Run the model on texts (no cache lookup) and store the results; input order.

        With ``lengths`` (token counts of an arrival-order batch, as a server gathers them), the
        texts run in length groups that minimise padding plus per-run overhead; otherwise the
        model's own length-sorted token-budget batching applies. Inputs run by kind, as the
        tokenizer encodes them.
        """
        if not texts:
            return []
        if not all(type(t) is str for t in texts):
            return self._infer_mixed(texts, lengths)
        # The logits go into the cache with the rest (a stand-in model without them, as tests use, is fine).
        run = getattr(self.model, "classify_with_logits", self.model.classify)
        if lengths is None or self.model.provider != "cpu" or self.model.static_shape:
            results: list[Any] = run(texts)
        else:
            results = [None] * len(texts)
            for group in length_groups([lengths.get(t, 0) for t in texts]):
                for i, result in zip(group, run([texts[i] for i in group])):
                    results[i] = result
        if self.cache is not None:
            self.cache.put_many(self.namespace, zip(texts, results))
        return results

    def _infer_mixed(self, items: Sequence[Item], lengths: Mapping[Any, int] | None) -> list[Result]:
        """infer() for a batch holding Inputs: plain texts as usual, each kind of Input in its own runs."""
        results: list[Any] = [None] * len(items)
        plain = [i for i, t in enumerate(items) if type(t) is str]
        for i, result in zip(plain, self.infer([items[i] for i in plain], lengths)):  # type: ignore[misc]
            results[i] = result
        kinds: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            if isinstance(item, Input):
                kinds[item.truncate_from].append(i)
        for side, where in kinds.items():
            inputs = list(dict.fromkeys(items[i] for i in where))
            fresh = {item: _as_found(item, result, cache_hit=False)
                     for item, result in zip(inputs, self.model.classify_inputs([_raw(t) for t in inputs], side))}
            for i in where:
                results[i] = fresh[items[i]]
            if self.cache is not None:
                for space, group in _by_space(self, inputs).items():
                    self.cache.put_many(space, [(_key(t), fresh[t]) for t in group])
        return results

    def classify_each(self, texts: Sequence[Item], lengths: Mapping[Any, int] | None = None, *,
                      logits: bool = False) -> list[Result | BadRecord]:
        """classify(), except that a text the model fails on becomes an ``inference_error`` BadRecord
        while the rest of the batch is classified: the failing texts are found by halving the batch
        (log2(n) extra runs for one poison text), so one bad record never stops a stream."""
        try:
            return list(self.classify(texts, lengths, logits=logits))
        except InferenceError as exc:
            unique = list(dict.fromkeys(texts))
            if len(unique) == 1:
                bad = BadRecord(INFERENCE_ERROR, str(exc))
                return [bad] * len(texts)
            half = len(unique) // 2
            done: dict[Any, Result | BadRecord] = {}
            for part in (unique[:half], unique[half:]):
                done.update(zip(part, self.classify_each(part, lengths, logits=logits)))
            return [done[t] for t in texts]

    def classify(self, texts: Sequence[Item], lengths: Mapping[Any, int] | None = None, *,
                 logits: bool = False) -> list[Result]:
        """Results in input order: repeated texts are inferred once, cached ones not at all.

        logits: keep each result's raw ``logits`` ({label: value}); a cached result stored before
        logits were kept is then inferred again. Without it, results have the Result contract's
        fields only.
        """
        known = self.lookup(texts, logits=logits)
        if logits:
            known = {t: r for t, r in known.items() if "logits" in r}
        misses = [t for t in dict.fromkeys(texts) if t not in known]
        try:
            fresh = self.infer(misses, lengths)
        except Exception as exc:
            if not is_runtime_error(exc):
                raise
            raise InferenceError(f"inference failed: {runtime_message(exc)}") from exc
        known.update(zip(misses, fresh if logits else map(_without_logits, fresh)))
        return [known[t] for t in texts]


def _raw(item: Item) -> str | tuple[str, str]:
    """What the model's tokenizer takes for an item: a text, or a (text, text pair) tuple."""
    if type(item) is str:
        return item  # type: ignore[return-value]
    return item.text if item.pair is None else (item.text, item.pair)  # type: ignore[union-attr]


def _key(item: Item) -> str:
    return item if type(item) is str else item.key  # type: ignore[return-value,union-attr]


def _by_space(engine: Engine, items: Sequence[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Hashable]] = defaultdict(list)
    for item in dict.fromkeys(items):
        groups[engine._space(item)].append(item)
    return groups  # type: ignore[return-value]


def _as_found(item: Item, result: Any, cache_hit: bool = True) -> Result:
    """A stored or fresh result as the caller of this item sees it: its text (and pair), cache_hit."""
    out = {**result, "cache_hit": cache_hit}
    if type(item) is str:
        out["text"] = item
    else:
        out["text"] = item.text  # type: ignore[union-attr]
        if item.pair is not None:  # type: ignore[union-attr]
            out["text_pair"] = item.pair  # type: ignore[union-attr]
    return out  # type: ignore[return-value]


def _without_logits(result: Any) -> Any:
    if "logits" not in result:
        return result
    out = dict(result)
    del out["logits"]
    return out
