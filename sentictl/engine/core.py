"""The Engine: the one API every door calls (score, serve, bridge, bench, eval, the Python API).

texts → Inputs → cache lookup (key space = fingerprint + long-text mode [+ kind], key = text)
→ de-dup → the misses encoded once by the tokenizer → token-budget batches → ONNX Runtime
→ cache store → typed results in input order.

One input type: a plain ``str`` is ``Input(str)``, converted at the door (:meth:`Engine.inputs`);
sentence pairs and left-cut texts are Inputs too, each kind cached in a key space of its own.
Results carry their raw logits to whoever asks for them (``logits=True``) and nobody else.

A caller that coalesces work across requests (serve's batcher) splits :meth:`Engine.classify` in
two: :meth:`Engine.prepare` (lookup, de-dup, encode the misses) per request, one
:meth:`Engine.infer` for the misses of many requests, then :meth:`Pending.finish` per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from .. import config
from ..errors import InferenceError
from .batching import length_groups
from .model import Model
from .records import INFERENCE_ERROR, BadRecord, Input, Verdict, check_pair, check_text, from_bytes
from .results import ResultDict
from .session import is_runtime_error, runtime_message
from .tokenizer import Encoded

# What the engine's methods take: Inputs, or plain texts (each is Input(text)).
Texts = Sequence[str | Input]


class ResultStore(Protocol):
    """What the engine needs of a result cache: a SQLite file (cache.ResultCache) or a Redis server
    (rediscache.RedisCache). Stored values are plain JSON objects (Results)."""

    @property
    def path(self) -> Path | str:
        """The file, or the (redacted) URL."""

    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def put_many(self, namespace: str, results: Iterable[tuple[str, dict[str, Any]]]) -> int: ...

    def close(self) -> None: ...


class Pending:
    """One classify call between its cache lookup and its inference: the hits, and the misses encoded."""

    __slots__ = ("inputs", "known", "misses", "logits")

    def __init__(self, inputs: list[Input], known: dict[Input, ResultDict], misses: list[Encoded], logits: bool):
        self.inputs = inputs
        self.known = known
        self.misses = misses
        self.logits = logits

    @property
    def tokens(self) -> int:
        """Tokens the misses occupy in a batch."""
        return sum(e.tokens for e in self.misses)

    def finish(self, fresh: Sequence[ResultDict]) -> list[ResultDict]:
        """Results in input order, given the results :meth:`Engine.infer` gave for ``misses``."""
        known = self.known
        for e, result in zip(self.misses, fresh):
            known[e.input] = result if self.logits else _without_logits(result)
        return [known[x] for x in self.inputs]


class Engine:
    """A loaded model, the shared cache (or None) and the record rules, behind one API."""

    def __init__(self, model: Model, cache: ResultStore | None = None, *, max_chars: int = config.DEFAULT_MAX_CHARS):
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

    @property
    def max_length(self) -> int:
        """Tokens the model takes per input (special tokens included)."""
        return self.model.max_length

    @property
    def long(self) -> str:
        """The long-text mode: "truncate" or "chunk"."""
        return self.model.long

    @property
    def max_batch_size(self) -> int:
        """Most inputs of one inference run."""
        return self.model.max_batch_size

    @property
    def run_tokens(self) -> int:
        """Token budget of one inference run (--run-tokens)."""
        return self.model.run_tokens

    @property
    def precision(self) -> str:
        """The weights' precision word in the manifest (e.g. "int8"), else the variant's name."""
        entry = self.model.manifest["variants"][self.model.variant]
        return str(entry.get("precision") or self.model.variant)

    def info(self) -> dict[str, Any]:
        """Model facts for /info and `sentictl info`."""
        return self.model.info()

    # ------------------------------------------------------------------ records
    def check(self, text: str, source: str = "-", position: int = 0) -> Verdict:
        """The verdict for a decoded text under this engine's --max-chars."""
        return check_text(text, self.max_chars, source, position)

    def check_bytes(
        self, raw: bytes | None, *, json_field: str | None = None, source: str = "-", position: int = 0
    ) -> Verdict:
        """The verdict for received bytes (raw text, or a field of a JSON object)."""
        return from_bytes(raw, self.max_chars, json_field=json_field, source=source, position=position)

    def check_pair(self, first: str, second: str) -> tuple[str, str] | BadRecord:
        """The verdict for a sentence pair (both normalised; empty only when both are blank)."""
        return check_pair(first, second, self.max_chars)

    # ------------------------------------------------------------------ inputs and tokens
    def input(self, text: str, pair: str | None = None, truncate_from: str = "right") -> Input:
        """The Input for a text (or pair) and the side a too-long input loses. In chunk mode a single
        text is classified whole, so the side it would be cut at does not make it another input."""
        if pair is None and self.model.long == "chunk":
            truncate_from = "right"
        return Input(text, pair, truncate_from)

    def inputs(self, texts: Iterable[str | Input]) -> list[Input]:
        """The door's texts as Inputs (a str is Input(str)), the engine's one input type."""
        chunked = self.model.long == "chunk"
        out = []
        for t in texts:
            if isinstance(t, str):
                out.append(Input(t))
            elif chunked and t.pair is None and t.truncate_from != "right":
                out.append(Input(t.text))
            else:
                out.append(t)
        return out

    def encode(self, texts: Texts) -> list[Encoded]:
        """Each text or Input as the model will run it (encoded once: infer() takes these)."""
        return self.model.encode_inputs(self.inputs(texts))

    def padding(self, texts: Texts) -> tuple[int, int]:
        """Real and padded tokens of the runs the model makes of these texts (as classify batches them)."""
        real = padded = 0
        for lengths in self.model.runs(self.encode(texts)):
            real += sum(lengths)
            padded += self.model.padded(lengths)
        return real, padded

    def input_lengths(self, texts: Texts) -> list[int]:
        """Tokens each text or Input holds before any truncation (special tokens included)."""
        return [len(e.ids) for e in self.model.tokenize([x.raw for x in self.inputs(texts)])]

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[Any]:
        """``tokenizers`` Encodings of texts as the model sees them (special tokens included), uncut."""
        return self.model.tokenize(texts, add_special_tokens)

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The texts of token id sequences."""
        return self.model.decode(ids, skip_special_tokens)

    def unknown_id(self, token_id: int) -> bool:
        """Whether an id names no token of this model's tokenizer."""
        try:
            return token_id < 0 or self.model.tokenizer.id_to_token(token_id) is None
        except OverflowError:  # past the tokenizer's u32
            return True

    @property
    def vocab_size(self) -> int:
        return int(self.model.tokenizer.get_vocab_size(with_added_tokens=True))

    # ------------------------------------------------------------------ classification
    def _space(self, x: Input) -> str:
        """The cache key space of an input: the model's namespace, and a pair's or left-cut text's kind."""
        return self.namespace if x.plain else f"{self.namespace}:{x.kind}"

    def lookup(self, texts: Texts, *, logits: bool = True) -> dict[Input, ResultDict]:
        """Cached results for the inputs that have one, marked cache_hit (no inference); logits=False
        leaves out their logits, logits=True leaves out an entry stored without them (see classify)."""
        if self.cache is None or not texts:
            return {}
        spaces: dict[str, dict[str, Input]] = {}
        for x in self.inputs(texts):
            spaces.setdefault(self._space(x), {})[x.key] = x
        found: dict[Input, ResultDict] = {}
        for space, keys in spaces.items():
            for key, stored in self.cache.get_many(space, list(keys)).items():
                if logits and "logits" not in stored:
                    continue
                x = keys[key]
                hit = cast(ResultDict, {**stored, "text": x.text, "cache_hit": True})
                if x.pair is not None:
                    hit["text_pair"] = x.pair
                found[x] = hit if logits else _without_logits(hit)
        return found

    def prepare(
        self, texts: Texts, *, logits: bool = False, found: Mapping[Input, ResultDict] | None = None
    ) -> Pending:
        """The first half of classify(): the inputs, their cached results (``found``: from a lookup
        already made, e.g. one shared by several requests) and the misses, de-duplicated and encoded."""
        inputs = self.inputs(texts)
        unique = list(dict.fromkeys(inputs))
        known = dict(self.lookup(unique, logits=logits) if found is None else found)
        misses = [x for x in unique if x not in known]
        return Pending(inputs, known, self.model.encode_inputs(misses) if misses else [], logits)

    def infer(self, encoded: Sequence[Encoded], *, arrival_order: bool = False) -> list[ResultDict]:
        """Run the model on encoded inputs (no cache lookup) and store the results (with logits); input
        order. Inputs repeated across the list run once.

        ``arrival_order``: the inputs are an arrival-order batch (a server's); on cpu they run in
        length groups that minimise padding plus per-run overhead. Otherwise the model's own
        length-sorted token-budget batching applies, as for score's chunks.
        InferenceError when ONNX Runtime fails.
        """
        unique = list({e.input: e for e in encoded}.values())
        if not unique:
            return []
        try:
            if arrival_order and self.model.provider == "cpu" and not self.model.static_shape:
                results: dict[Input, ResultDict] = {}
                for group in length_groups([e.tokens for e in unique]):
                    part = [unique[i] for i in group]
                    results.update(zip((e.input for e in part), self.model.run(part)))
            else:
                results = dict(zip((e.input for e in unique), self.model.run(unique)))
        except Exception as exc:
            if not is_runtime_error(exc):
                raise
            raise InferenceError(f"inference failed: {runtime_message(exc)}") from exc
        if self.cache is not None:
            spaces: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for x, result in results.items():
                # Stored as it is answered (the cache keeps plain JSON objects).
                spaces.setdefault(self._space(x), []).append((x.key, cast(dict[str, Any], result)))
            for space, rows in spaces.items():
                self.cache.put_many(space, rows)
        return [results[e.input] for e in encoded]

    def classify(self, texts: Texts, *, logits: bool = False) -> list[ResultDict]:
        """Results in input order: repeated texts are inferred once, cached ones not at all.

        logits: keep each result's raw ``logits`` ({label: value}); a cached result stored before
        logits were kept is then inferred again. Without it, results have no ``logits`` key.
        """
        pending = self.prepare(texts, logits=logits)
        return pending.finish(self.infer(pending.misses))

    def classify_each(self, texts: Texts, *, logits: bool = False) -> list[ResultDict | BadRecord]:
        """classify(), except that a text the model fails on becomes an ``inference_error`` BadRecord
        while the rest of the batch is classified: the failing texts are found by halving the batch
        (log2(n) extra runs for one poison text), so one bad record never stops a stream."""
        try:
            return list(self.classify(texts, logits=logits))
        except InferenceError as exc:
            inputs = self.inputs(texts)
            unique = list(dict.fromkeys(inputs))
            if len(unique) == 1:
                bad = BadRecord(INFERENCE_ERROR, str(exc))
                return [bad] * len(texts)
            half = len(unique) // 2
            done: dict[Input, ResultDict | BadRecord] = {}
            for part in (unique[:half], unique[half:]):
                done.update(zip(part, self.classify_each(part, logits=logits)))
            return [done[x] for x in inputs]


def _without_logits(result: ResultDict) -> ResultDict:
    if "logits" not in result:
        return result
    out = result.copy()
    del out["logits"]
    return out
