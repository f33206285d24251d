"""The engine: a model directory loaded with ``tokenizers`` and ``onnxruntime`` only.

This module is on the hot path of score/serve/bridge: it must never import torch,
transformers or optimum (a test checks ``sys.modules``).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from ..console import notice
from ..errors import ManifestError, ModelNotFound, SentictlError
from . import integrity
from .cpu import int8_mismatch
from .integrity import sha256_file  # noqa: F401  (re-exported: export and tests use model.sha256_file)

# Re-exported: the doors and tools read manifests through the model module they already import.
from .manifest import (  # noqa: F401
    MANIFEST,
    MANIFEST_FORMAT,
    check_model_dir,
    data_entries,
    default_verify_mode,
    fingerprint,
    is_foreign,
    read_manifest,
)
from .records import Input
from .results import Result
from .verified import VerifiedFiles

# ORT's provider names, and the variant each one prefers when the provider is picked.
_ORT_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "coreml": "CoreMLExecutionProvider"}
PREFERRED_VARIANTS = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "coreml": ("coreml", "fp32")}
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
# Guards the lazily built tokenizer copies of every Model (see Model._encoder).
_ENCODERS_LOCK = threading.Lock()


def available_providers() -> list[str]:
    """ORT execution providers usable in this process (short names)."""
    import onnxruntime as ort

    names = set(ort.get_available_providers())
    return [short for short, long in _ORT_PROVIDER.items() if long in names]


def choose(manifest: dict[str, Any], provider: str = "auto", variant: str | None = None) -> tuple[str, str]:
    """Pick (provider, variant) for a manifest: auto takes the best available provider."""
    if provider not in config.PROVIDERS:
        raise SentictlError(f"unknown provider {provider!r}: use one of {', '.join(config.PROVIDERS)}")
    variants = manifest["variants"]
    # A variant may be listed only for its figures (its file not shipped), or judged too inaccurate.
    usable = [name for name, v in variants.items() if v.get("usable", True) and v.get("shipped", True)]
    have = available_providers()
    if variant is not None:
        have_files = [n for n, v in variants.items() if v.get("shipped", True)]
        if variant not in variants:
            raise SentictlError(f"this model has no {variant!r} variant (it has: {', '.join(have_files)})")
        if not variants[variant].get("shipped", True):
            raise SentictlError(
                f"the {variant} variant's file is not shipped with this model (the manifest keeps only its "
                f"export figures; `sentictl info` lists what is): use --variant {' or '.join(have_files) or '?'}"
            )
        target = variants[variant].get("provider", "cpu") if provider == "auto" else provider
        if target not in have:
            notice(f"provider {target} is not available here; running the {variant} variant on cpu")
            target = "cpu"
        return target, variant
    if provider == "auto":
        # An accelerator is only worth it with a variant built for it; fp32 is the cpu fallback.
        for candidate in (p for p in ("cuda", "coreml") if p in have):
            for name in PREFERRED_VARIANTS[candidate]:
                if name != "fp32" and name in usable:
                    return candidate, name
        for name in PREFERRED_VARIANTS["cpu"]:
            if name in usable:
                return "cpu", name
        raise SentictlError("no usable variant in this model: re-run `sentictl export`")
    if provider not in have:
        notice(f"provider {provider} is not available here (have: {', '.join(have)}); falling back to cpu")
        provider = "cpu"
    for name in PREFERRED_VARIANTS[provider]:
        if name in usable:
            return provider, name
    raise SentictlError(f"no usable variant for provider {provider}: re-run `sentictl export`")


def _return_freed_memory() -> None:
    """Give the heap memory ORT freed while loading back to the system (glibc only; else a no-op).

    Pre-packing copies every quantized weight and frees the original, but glibc keeps freed
    blocks for reuse: without this, a bert-base int8 process holds ~75 MB it no longer uses."""
    import ctypes

    try:
        # The symbols already loaded into this process, libc's among them (no library search).
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def fix_mmap_threshold(threshold: int = 128 * 1024) -> None:
    """Keep glibc's mmap threshold where it starts (glibc only; else a no-op), for processes that reload models.

    glibc raises the threshold each time a large block is freed (pre-packing frees every original
    weight), so a model loaded later gets its weights from the heap, where a freed model leaves
    holes the next one does not fit: a server that reloaded bert-base int8 six times held 100 MB
    more than at start; with the threshold fixed, 13 MB (benchmarks/bench_reload.py). Large blocks
    stay mapped and are returned when freed."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):
        pass


def release_when_freed(model: Model, then: Any = None) -> None:
    """Give the memory of a model that is being replaced (a reload) back to the system once the last
    reference to it is dropped (requests in flight may still hold it): its session's weights and
    arena would otherwise stay in glibc's free lists. ``then``: called after that (e.g. to log it)."""
    import weakref

    def freed() -> None:
        _return_freed_memory()
        if then is not None:
            then()

    weakref.finalize(model, freed)


@dataclass(slots=True)
class Encoded:
    """One input as the model runs it: its id rows (one, or a long text's chunks in chunk mode) with
    their token type ids and weights (chunks count by their tokens), and whether it was cut."""

    input: Input
    rows: list[list[int]]
    types: list[list[int]]
    weights: list[float]
    truncated: bool

    @property
    def tokens(self) -> int:
        """Tokens it occupies in batches (special tokens included), which set batch budgets."""
        return sum(len(r) for r in self.rows)


class Model:
    """A loaded model directory: tokenizer + one ONNX variant on one execution provider."""

    def __init__(
        self,
        model_dir: str | Path,
        provider: str = "auto",
        variant: str | None = None,
        threads: int | None = None,
        long: str = "truncate",
        max_batch_tokens: int = config.DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = config.DEFAULT_MAX_BATCH_SIZE,
        spin: bool = True,
        verify: str | None = None,
    ):
        """``verify``: how the variant and tokenizer files are checked against the manifest's
        sha256 before they run (see VerifiedFiles): "always" hashes them, "stamp" trusts a
        valid verified stamp and hashes otherwise, "off" checks nothing and runs the model under
        an *unverified* fingerprint that never equals the genuine one. None: "stamp", or "off"
        when SENTICTL_NO_VERIFY is set. A mismatch raises IntegrityError."""
        if long not in config.LONG_MODES:
            raise SentictlError(f"unknown --long mode {long!r}: use truncate or chunk")
        if verify is None:
            verify = default_verify_mode()
        if verify not in integrity.MODES:
            raise SentictlError(f"unknown verify mode {verify!r}: use one of {', '.join(integrity.MODES)}")
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.provider, self.variant = choose(self.manifest, provider, variant)
        self.long = long
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.max_batch_size = max(1, int(max_batch_size))
        entry = self.manifest["variants"][self.variant]
        self.verify_mode = verify
        files = VerifiedFiles(self.model_dir, self.manifest, self.variant, verify)
        self.fingerprint = files.fingerprint
        # Results of the two long-text modes differ, so they must never share cache entries.
        self.cache_namespace = f"{self.fingerprint}:{long}"
        self.name = f"{self.manifest.get('name', self.model_dir.name)}:{self.variant}"
        self.labels = [self.manifest["labels"][str(i)] for i in range(len(self.manifest["labels"]))]
        self.max_length = int(self.manifest["max_length"])
        self.static_shape = entry.get("static_shape")
        self.spin = spin
        mismatch = int8_mismatch(entry)
        if mismatch:
            notice(f"{self.name}: {mismatch}")
        try:
            self._load_tokenizer(files)
            self._load_session(entry, threads, files)
        finally:
            files.discard()
        self._probe()

    def _load_tokenizer(self, files: VerifiedFiles) -> None:
        from tokenizers import Tokenizer

        path = self.model_dir / self.manifest["tokenizer"]["file"]
        try:
            # From the verified bytes, never the file again.
            tok = Tokenizer.from_buffer(files.tokenizer)
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise ManifestError(f"cannot load tokenizer {path}: {exc}") from None
        finally:
            files.tokenizer = b""
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self._cls = tok.token_to_id(self.manifest["tokenizer"].get("cls_token", "[CLS]"))
        self._sep = tok.token_to_id(self.manifest["tokenizer"].get("sep_token", "[SEP]"))
        self._pad = self.manifest["tokenizer"].get("pad_id", 0)
        if self._pad is None:  # a folder optimum wrote may name its pad token without its id
            self._pad = tok.token_to_id(self.manifest["tokenizer"].get("pad_token") or "[PAD]") or 0
        if self._cls is None or self._sep is None:
            raise ManifestError(f"tokenizer {path} lacks [CLS]/[SEP] tokens")

    def _load_session(self, entry: dict[str, Any], threads: int | None, files: VerifiedFiles) -> None:
        import onnxruntime as ort

        path = self.model_dir / entry["file"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Fatal only: a failed run is an exception the engine reports in its own words (inference_error,
        # a start-up check), so ORT's own error line on stderr would only say it twice.
        opts.log_severity_level = 4
        if not self.spin:
            # Spin inside a run (its parallel sections hand over without a futex wake-up), but stop the
            # moment a run returns: idle ORT threads would otherwise spin on, taking the CPU that a
            # server's event loop needs to answer and gather the next batch. Measured on serve, 32
            # clients, FinBERT-shaped int8, 2 cores: no spinning 82 req/s with 0.46 cores idle; spinning
            # on 93 req/s; spinning stopped after each run 95-98 req/s (bench_serve.py).
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        if self.provider == "cpu":
            # A memory pattern is planned per input shape, and every text length is a new shape: on
            # bert-base int8 it added 30-40 MB to the peak for no measurable speed (benchmarks/NOTES.md).
            opts.enable_mem_pattern = False
        providers = [_ORT_PROVIDER[self.provider]]
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")
        # The verified bytes, never the model folder's files (see VerifiedFiles.source).
        source = files.source(path.name)
        data: list[bytes] = []
        if isinstance(source, bytes) and files.external:
            names = list(files.external)
            data = [files.external[n] or b"" for n in names]
            opts.add_external_initializers_from_files_in_memory(names, data, [len(d) for d in data])
        self.weights_from = "memory" if isinstance(source, bytes) else "a private copy"
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as exc:
            raise ManifestError(f"onnxruntime cannot load {path}: {exc}") from None
        finally:
            del source, data
            files.discard()
        _return_freed_memory()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = threads
        if is_foreign(self.manifest):
            self._check_foreign_outputs(path)

    def _probe(self) -> None:
        """Check the limits the engine relies on against the graph, with three tiny runs (and, where the
        folder only let us guess its max length, one at that length): a model that would fail on every
        batch is a start-up error, not a stream of inference errors.

        - a padded batch of two (the pad id must be a row of the embedding table);
        - a text as long as max_length (positions), when the folder did not declare it: the longest
          power of two that runs is used instead, with a notice;
        - the tokenizer's last id: past the embedding table, texts holding such ids fail one by one
          (reported as inference_error by the engine): said once here.
        """
        cls, sep = self._cls, self._sep
        # A graph of static shape (CoreML's) runs a fixed batch, always padded to its width.
        pair = [[cls, sep], [cls, cls, sep]][: int(self.static_shape[0]) if self.static_shape else 2]
        try:
            self._forward(pair)
        except Exception as exc:
            if not is_runtime_error(exc):
                raise
            raise ManifestError(
                f"{self.model_dir}: the model fails on a padded batch of two texts "
                f"({runtime_message(exc)}): is the pad token id {self._pad} right for it?"
            ) from None
        if (self.manifest.get("foreign") or {}).get("max_length_assumed") and not self.static_shape:
            self._probe_length()
        last = self.tokenizer.get_vocab_size() - 1
        try:
            self._forward([[cls, last, sep]])
        except Exception as exc:
            if not is_runtime_error(exc):
                raise
            notice(
                f"{self.name}: the tokenizer knows {last + 1:,} tokens, more than the model's embedding table "
                f"holds: texts holding the extra ones are reported as inference_error"
            )

    def _probe_length(self) -> None:
        """The folder declares no max length: keep the longest power of two (up to the guess) the graph runs."""
        length = self.max_length
        while length >= 8:
            try:
                self._forward([[self._cls] * (length - 1) + [self._sep]])
            except Exception as exc:
                if not is_runtime_error(exc):
                    raise
                length = 1 << ((length - 1).bit_length() - 1)  # the next power of two down
                continue
            if length != self.max_length:
                notice(
                    f"{self.name}: the folder declares no max length (max_position_embeddings, "
                    f"model_max_length) and the graph fails on {self.max_length} tokens: using {length}"
                )
                self.max_length = length
            return
        raise ManifestError(
            f"{self.model_dir}: the model fails even on a text of 8 tokens: is it a text classifier for this tokenizer?"
        )

    def _check_foreign_outputs(self, path: Path) -> None:
        """A folder optimum wrote for another task has no (batch, labels) logits: say so instead of misreading it."""
        outputs = self.session.get_outputs()
        shape = outputs[0].shape if outputs else []
        width = shape[-1] if len(shape) == 2 else None
        if (
            not outputs
            or outputs[0].name != "logits"
            or len(shape) != 2
            or (isinstance(width, int) and width != len(self.manifest["labels"]))
        ):
            raise ManifestError(
                f"{path} is not a text-classification model with {len(self.manifest['labels'])} labels "
                f"(first output {outputs[0].name if outputs else None} {list(shape)}): "
                f"export it with `optimum-cli export onnx --task text-classification`"
            )

    # ----------------------------------------------------------------- tokenization: the tokenizer's, one path
    @cached_property
    def _encoders(self) -> dict[str | None, Any]:
        return {}

    def _encoder(self, truncate_from: str | None) -> Any:
        """A copy of the tokenizer that adds the special tokens the model expects (the tokenizer's own
        post-processor, else [CLS] a [SEP] b [SEP] with type ids 0/1) and, with truncate_from "right"
        or "left", cuts an input to max_length tokens longest-first from that side, as
        ``tokenizers`` does. Copies, so the shared tokenizer is never reconfigured under another thread."""
        with _ENCODERS_LOCK:
            tok = self._encoders.get(truncate_from)
            if tok is None:
                from tokenizers import Tokenizer
                from tokenizers.processors import TemplateProcessing

                tok = Tokenizer.from_str(self.tokenizer.to_str())
                tok.no_padding()
                if tok.post_processor is None:
                    cls, sep = (self.tokenizer.id_to_token(i) for i in (self._cls, self._sep))
                    tok.post_processor = TemplateProcessing(
                        single=f"{cls} $A {sep}",
                        pair=f"{cls} $A {sep} $B:1 {sep}:1",
                        special_tokens=[(cls, self._cls), (sep, self._sep)],
                    )
                if truncate_from is None:
                    tok.no_truncation()
                else:
                    tok.enable_truncation(self.max_length, strategy="longest_first", direction=truncate_from)
                self._encoders[truncate_from] = tok
            return tok

    def tokenize(
        self, inputs: Sequence[str | tuple[str, str]], add_special_tokens: bool = True, truncate_from: str | None = None
    ) -> list[Any]:
        """``tokenizers`` Encodings of texts or (text, text pair) tuples, special tokens as the model runs them."""
        return self._encoder(truncate_from).encode_batch(list(inputs), add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The texts of token id sequences."""
        return self.tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids without special tokens, for every text (what chunking packs)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_inputs(self, inputs: Sequence[Input]) -> list[Encoded]:
        """Each input as the model will run it: encoded by the tokenizer (cut at its side), or, in chunk
        mode, a single text over the limit as its sentence chunks."""
        out: dict[int, Encoded] = {}
        sides: dict[str | None, list[int]] = {}
        for i, x in enumerate(inputs):
            # Chunk mode classifies a single text whole: encoded uncut, chunked below when too long.
            sides.setdefault(None if self.long == "chunk" and x.pair is None else x.truncate_from, []).append(i)
        for side, where in sides.items():
            for i, e in zip(where, self.tokenize([inputs[i].raw for i in where], truncate_from=side)):
                if side is None and len(e.ids) > self.max_length:
                    out[i] = self._chunked(inputs[i])
                else:
                    out[i] = Encoded(inputs[i], [e.ids], [e.type_ids], [1.0], bool(e.overflowing))
        return [out[i] for i in range(len(inputs))]

    def _chunked(self, x: Input) -> Encoded:
        """A long text in chunk mode: its chunks, each weighted by its token count."""
        chunks = self._chunks(x.text, self.max_length - 2)
        rows = [[self._cls, *c, self._sep] for c in chunks]
        return Encoded(x, rows, [[0] * len(r) for r in rows], [float(len(c)) for c in chunks], False)

    def _chunks(self, text: str, budget: int) -> list[list[int]]:
        """Split a long text into pieces under the limit: whole sentences where possible."""
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        pieces: list[list[int]] = []
        for ids in self.encode(sentences):
            # A sentence longer than the limit is cut into fixed windows.
            for start in range(0, len(ids), budget):
                pieces.append(ids[start : start + budget])
        chunks: list[list[int]] = []
        current: list[int] = []
        for piece in pieces:
            if current and len(current) + len(piece) > budget:
                chunks.append(current)
                current = []
            current = current + piece
        if current:
            chunks.append(current)
        return chunks or [[]]

    # ----------------------------------------------------------------- running
    def _groups(self, lengths: list[int]) -> Iterable[list[int]]:
        """Indices of sequences of these lengths (special tokens included), sorted by length and
        grouped under the token budget."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        if self.static_shape:
            size = int(self.static_shape[0])
            for start in range(0, len(order), size):
                yield order[start : start + size]
            return
        batch: list[int] = []
        for k in order:
            length = lengths[k]
            # Sorted ascending, so the newest item is the longest: it sets the padded width.
            if batch and ((len(batch) + 1) * length > self.max_batch_tokens or len(batch) >= self.max_batch_size):
                yield batch
                batch = []
            batch.append(k)
        if batch:
            yield batch

    def runs(self, encoded: Sequence[Encoded]) -> list[list[int]]:
        """The row lengths of each run scores() makes of these inputs."""
        lengths = [len(r) for e in encoded for r in e.rows]
        return [[lengths[k] for k in batch] for batch in self._groups(lengths)]

    def padded(self, lengths: Sequence[int]) -> int:
        """Tokens a run of rows of these lengths occupies once padded."""
        if self.static_shape:
            return int(self.static_shape[0]) * int(self.static_shape[1])
        return max(lengths) * len(lengths)

    def _forward(self, rows: list[list[int]], type_ids: list[list[int]] | None = None) -> np.ndarray:
        """Logits (float64, rows x labels) of complete id sequences (special tokens included)."""
        width = max(len(r) for r in rows)
        n = len(rows)
        if self.static_shape:
            n, width = int(self.static_shape[0]), int(self.static_shape[1])
        ids = np.full((n, width), self._pad, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
            if type_ids is not None:
                types[r, : len(row)] = type_ids[r]
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = types
        logits = self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]
        return np.asarray(logits, dtype=np.float64)[: len(rows)]

    def scores(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and raw logits (n x labels each, label-id order) of encoded inputs, run in
        length-sorted batches under the token budget. A chunked text's are its chunks', averaged by token count."""
        n = len(self.labels)
        if not encoded:
            return np.zeros((0, n)), np.zeros((0, n))
        rows = [r for e in encoded for r in e.rows]
        types = [t for e in encoded for t in e.types]
        logits = np.zeros((len(rows), n))
        for batch in self._groups([len(r) for r in rows]):
            logits[batch] = self._forward([rows[k] for k in batch], [types[k] for k in batch])
        probs = _softmax(logits)
        if len(rows) == len(encoded):
            return probs, logits
        out, out_logits, weight = np.zeros((len(encoded), n)), np.zeros((len(encoded), n)), np.zeros(len(encoded))
        k = 0
        for owner, e in enumerate(encoded):
            for w in e.weights:
                out[owner] += probs[k] * w
                out_logits[owner] += logits[k] * w
                weight[owner] += w
                k += 1
        return out / weight[:, None], out_logits / weight[:, None]

    def run(self, encoded: Sequence[Encoded]) -> list[Result]:
        """Results (with logits) of encoded inputs, in their order: what the engine stores and answers."""
        probs, logits = self.scores(encoded)
        return [self.result(e.input, p, e.truncated, raw) for e, p, raw in zip(encoded, probs, logits)]

    def result(self, x: Input, row: np.ndarray, truncated: bool, logits: np.ndarray) -> Result:
        """One result from a probability row and the logits it came from."""
        best = int(row.argmax())
        out: Result = {
            "text": x.text,
            "label": self.labels[best],
            "score": round(float(row[best]), 6),
            "scores": {label: round(float(p), 6) for label, p in zip(self.labels, row)},
            "model": self.name,
            "cache_hit": False,
        }
        if truncated:
            out["truncated"] = True
        out["logits"] = {label: round(float(v), 6) for label, v in zip(self.labels, logits)}
        if x.pair is not None:
            out["text_pair"] = x.pair
        return out

    # ----------------------------------------------------------------- for tools and tests: plain texts
    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Class probabilities (n x labels, in label-id order) and a truncated flag per text."""
        encoded = self.encode_inputs([Input(t) for t in texts])
        return self.scores(encoded)[0], [e.truncated for e in encoded]

    def classify(self, texts: Sequence[str]) -> list[Result]:
        """Results for plain texts, in input order, without logits (no cache: that is the Engine's)."""
        results = self.run(self.encode_inputs([Input(t) for t in texts]))
        for r in results:
            del r["logits"]
        return results

    def info(self) -> dict[str, Any]:
        """What /info and `sentictl info` show."""
        return {
            "model_dir": str(self.model_dir),
            "name": self.manifest.get("name"),
            "source": self.manifest.get("source"),
            "variant": self.variant,
            "provider": self.provider,
            "fingerprint": self.fingerprint,
            "verify": self.verify_mode,
            "max_length": self.max_length,
            "labels": self.labels,
            "long": self.long,
        }


def is_runtime_error(exc: BaseException) -> bool:
    """Whether ONNX Runtime raised it (its errors are plain pybind11 classes of its own module)."""
    return type(exc).__module__.startswith("onnxruntime")


def runtime_message(exc: BaseException) -> str:
    """The first line of an ONNX Runtime error, bounded."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    return probs / probs.sum(axis=1, keepdims=True)


def stderr_is_terminal() -> bool:
    """Whether a person watches stderr: the chosen-model line is for them, not for logs and pipes."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr closed or replaced by an object without a file
        return False


def announce(resolved: config.ResolvedModel, name: str | None = None, quiet: bool = False) -> None:
    """Say which model directory a command uses, and why, in one stderr line.

    The bundled model is always named (its figures are not FinBERT's). Any other directory is named
    when stderr is a terminal: the default one is relative to the current directory, so the same
    command can run another model one folder up.
    """
    if quiet:
        return
    if resolved.bundled:
        notice(
            f"using the bundled {config.BUNDLED_MODEL_NAME} model ({resolved.reason}); "
            f"for FinBERT run `sentictl export` (or `sentictl export --model DIR` offline)"
        )
    elif stderr_is_terminal():
        notice(f"using {name + ' from ' if name else ''}{resolved.path.absolute()}: {resolved.reason}")


def load(model_dir: str | Path | None = None, *, quiet: bool = False, **kwargs: Any) -> Model:
    """Resolve the model directory (see config.resolve_model_dir), say which one and why, and load it."""
    resolved = config.resolve_model_dir(model_dir)
    if resolved.bundled:
        if not (resolved.path / MANIFEST).is_file():
            raise ModelNotFound(
                f"no model to use: {resolved.reason}, and this install has no bundled model. "
                f"Run `sentictl export` (FinBERT from the hub) or pass --model-dir"
            )
        announce(resolved, quiet=quiet)
    model = Model(resolved.path, **kwargs)
    if not resolved.bundled:
        announce(resolved, model.name, quiet=quiet)
    if is_foreign(model.manifest) and not quiet:
        notice(
            f"{resolved.path} has no {MANIFEST}: read as an optimum folder ({model.variant} from "
            f"{model.manifest['variants'][model.variant]['file']}, labels from config.json); no parity figures "
            f"were measured for it (`sentictl export` makes a checked folder)"
        )
    return model
