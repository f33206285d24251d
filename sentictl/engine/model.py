"""The engine's model: a model directory loaded with ``tokenizers`` and ``onnxruntime`` only, which
chooses its provider and variant, checks its files and graph at load, and runs encoded inputs in
length-sorted batches under the per-run token budget.

Loading is split by step: the files (verified.py), the tokenizer (tokenizer.py), the ONNX Runtime
session (session.py) and the start-up checks (probes.py). The manifest helpers are re-exported
here for the doors and tools that read manifests through this module.

This module is on the hot path of score/serve/bridge: it must never import torch,
transformers or optimum (a test checks ``sys.modules``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .. import config
from ..console import notice
from ..errors import ModelNotFound, SentictlError
from . import integrity, probes
from .cpu import int8_mismatch
from .integrity import sha256_file
from .manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    check_model_dir,
    data_entries,
    default_verify_mode,
    fingerprint,
    is_foreign,
    read_manifest,
    verify,
)
from .records import Input
from .results import ResultDict
from .session import ORT_PROVIDER, check_logits_output, open_session, session_options
from .tokenizer import Encoded, SpecialIds, TextEncoder, load_tokenizer
from .verified import VerifiedFiles

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

# This module's own names.
__all__ = ["Model", "PREFERRED_VARIANTS", "announce", "available_providers", "choose", "load", "stderr_is_terminal"]
# Re-exported for the doors, tools and tests that use them through this module.
__all__ += ["MANIFEST", "MANIFEST_FORMAT", "Encoded", "check_model_dir", "data_entries", "fingerprint", "read_manifest"]
__all__ += ["sha256_file", "verify"]

Floats = npt.NDArray[np.float64]

# The variant each provider prefers when the provider is picked.
PREFERRED_VARIANTS = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "coreml": ("coreml", "fp32")}


def available_providers() -> list[str]:
    """ORT execution providers usable in this process (short names)."""
    import onnxruntime as ort

    names = set(ort.get_available_providers())
    return [short for short, long in ORT_PROVIDER.items() if long in names]


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


class Model:
    """A loaded model directory: tokenizer + one ONNX variant on one execution provider."""

    def __init__(
        self,
        model_dir: str | Path,
        provider: str = "auto",
        variant: str | None = None,
        threads: int | None = None,
        long: str = "truncate",
        run_tokens: int = config.DEFAULT_RUN_TOKENS,
        max_batch_size: int = config.DEFAULT_MAX_BATCH_SIZE,
        spin_after_run: bool = True,
        verify: str | None = None,
    ):
        """``run_tokens``: the token budget of one inference run (padded tokens); ``max_batch_size``:
        the most rows of one run. ``spin_after_run``: False stops ORT's threads spinning the moment a
        run returns (they spin inside it), for servers (see session.session_options).

        ``verify``: how the variant and tokenizer files are checked against the manifest's
        sha256 before they run (see VerifiedFiles): "always" hashes them, "stamp" trusts a
        valid verified stamp and hashes otherwise, "off" checks nothing and runs the model under
        an *unverified* fingerprint that never equals the genuine one. None: "stamp", or "off"
        when SENTICTL_NO_VERIFY is set. A mismatch raises IntegrityError."""
        verify = _checked_modes(long, verify)
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.provider, self.variant = choose(self.manifest, provider, variant)
        self.long = long
        self.run_tokens = max(1, int(run_tokens))
        self.max_batch_size = max(1, int(max_batch_size))
        entry: dict[str, Any] = self.manifest["variants"][self.variant]
        self.verify_mode = verify
        files = VerifiedFiles(self.model_dir, self.manifest, self.variant, verify)
        self.fingerprint = files.fingerprint
        # Results of the two long-text modes differ, so they must never share cache entries.
        self.cache_namespace = f"{self.fingerprint}:{long}"
        self.name = f"{self.manifest.get('name', self.model_dir.name)}:{self.variant}"
        self.labels: list[str] = [self.manifest["labels"][str(i)] for i in range(len(self.manifest["labels"]))]
        self.max_length = int(self.manifest["max_length"])
        self.static_shape: list[int] | None = entry.get("static_shape")
        self.threads = threads
        mismatch = int8_mismatch(entry)
        if mismatch:
            notice(f"{self.name}: {mismatch}")
        try:
            ids = self._load(files, entry, spin_after_run)
        finally:
            files.discard()
        self.max_length = probes.checked_max_length(self, ids)
        self.text = TextEncoder(self.tokenizer, ids, self.max_length, long)

    def _load(self, files: VerifiedFiles, entry: dict[str, Any], spin_after_run: bool) -> SpecialIds:
        """The tokenizer and the ORT session from the verified files; the special ids."""
        spec = self.manifest["tokenizer"]
        tokenizer, ids = load_tokenizer(files, spec, self.model_dir / spec["file"])
        self.tokenizer: Tokenizer = tokenizer
        self._cls, self._sep, self._pad = ids
        path = self.model_dir / entry["file"]
        opts = session_options(self.provider, self.threads, spin_after_run)
        self.session, self.weights_from = open_session(path, self.provider, opts, files)
        self.input_names: list[str] = [i.name for i in self.session.get_inputs()]
        if is_foreign(self.manifest):
            check_logits_output(self.session, len(self.manifest["labels"]), path)
        return ids

    # ----------------------------------------------------------------- tokenization: the tokenizer's, one path
    def tokenize(
        self, inputs: Sequence[str | tuple[str, str]], add_special_tokens: bool = True, truncate_from: str | None = None
    ) -> list[Encoding]:
        """``tokenizers`` Encodings of texts or (text, text pair) tuples, special tokens as the model runs them."""
        return self.text.tokenize(inputs, add_special_tokens, truncate_from)

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The texts of token id sequences."""
        return self.text.decode(ids, skip_special_tokens)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids without special tokens, for every text (what chunking packs)."""
        return self.text.encode(texts)

    def encode_inputs(self, inputs: Sequence[Input]) -> list[Encoded]:
        """Each input as the model will run it: cut at its side, or in chunk mode, a single text over the
        limit as its sentence chunks (see TextEncoder)."""
        return self.text.encode_inputs(inputs)

    def _chunks(self, text: str, budget: int) -> list[list[int]]:
        """A long text's chunks of at most ``budget`` word pieces, as chunk mode runs them."""
        return self.text.chunks(text, budget)

    # ----------------------------------------------------------------- running
    def _groups(self, lengths: list[int]) -> Iterable[list[int]]:
        """Indices of sequences of these lengths (special tokens included), sorted by length and
        grouped under the token budget of one run."""
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
            if batch and ((len(batch) + 1) * length > self.run_tokens or len(batch) >= self.max_batch_size):
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

    def forward(self, rows: list[list[int]], type_ids: list[list[int]] | None = None) -> Floats:
        """Logits (float64, rows x labels) of complete id sequences (special tokens included): one ORT run."""
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

    def scores(self, encoded: Sequence[Encoded]) -> tuple[Floats, Floats]:
        """Probabilities and raw logits (n x labels each, label-id order) of encoded inputs, run in
        length-sorted batches under the token budget. A chunked text's are its chunks', averaged by token count."""
        n = len(self.labels)
        if not encoded:
            return np.zeros((0, n)), np.zeros((0, n))
        rows = [r for e in encoded for r in e.rows]
        types = [t for e in encoded for t in e.types]
        logits = np.zeros((len(rows), n))
        for batch in self._groups([len(r) for r in rows]):
            logits[batch] = self.forward([rows[k] for k in batch], [types[k] for k in batch])
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

    def run(self, encoded: Sequence[Encoded]) -> list[ResultDict]:
        """Results (with logits) of encoded inputs, in their order: what the engine stores and answers."""
        probs, logits = self.scores(encoded)
        return [self.result(e.input, p, e.truncated, raw) for e, p, raw in zip(encoded, probs, logits)]

    def result(self, x: Input, row: Floats, truncated: bool, logits: Floats) -> ResultDict:
        """One result from a probability row and the logits it came from."""
        best = int(row.argmax())
        out: ResultDict = {
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
    def predict_proba(self, texts: Sequence[str]) -> tuple[Floats, list[bool]]:
        """Class probabilities (n x labels, in label-id order) and a truncated flag per text."""
        encoded = self.encode_inputs([Input(t) for t in texts])
        return self.scores(encoded)[0], [e.truncated for e in encoded]

    def classify(self, texts: Sequence[str]) -> list[ResultDict]:
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


def _checked_modes(long: str, verify: str | None) -> str:
    """Refuse an unknown long-text mode or verify mode; the verify mode to use (None: the default)."""
    if long not in config.LONG_MODES:
        raise SentictlError(f"unknown --long mode {long!r}: use truncate or chunk")
    if verify is None:
        verify = default_verify_mode()
    if verify not in integrity.MODES:
        raise SentictlError(f"unknown verify mode {verify!r}: use one of {', '.join(integrity.MODES)}")
    return verify


def _softmax(logits: Floats) -> Floats:
    """Row-wise softmax (float64)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    out: Floats = probs / probs.sum(axis=1, keepdims=True)
    return out


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
