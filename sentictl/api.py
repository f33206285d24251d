"""The public Python API: ``sentictl.load(...) -> Classifier``, ``Classifier.classify(texts) -> list[Result]``.

The CLI's doors and this API stand on the same engine: the same model choice (argument >
``SENTICTL_MODEL_DIR`` > ``models/finbert`` > the bundled model), the same record rules and reason
codes, the same cache keys (a text scored by ``sentictl score --cache F`` is a cache hit here with
``cache=F``), the same token-budget batching. docs/python-api.md is the user's page.

Nothing here prints: notices go to the ``sentictl`` logger (see :func:`sentictl.console.library_notices`).
Importing this module is cheap: the engine (numpy, tokenizers, onnxruntime) is imported by :func:`load`.
A :class:`Classifier` pickles by reference (model folder, options, verified fingerprint) and loads
the model again in the receiving process, once per process, refusing a folder that holds another model.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Union

from . import config
from .console import library_notices
from .errors import ManifestError, SentictlError

if TYPE_CHECKING:
    from .engine.core import Engine, ResultStore
    from .engine.records import BadRecord, Verdict
    from .engine.results import ResultDict as EngineResult

__all__ = ["DEFAULT_CACHE", "CacheDefault", "Classifier", "ModelMismatch", "Result", "SentictlError", "load"]

# Texts handed to the engine at a time: what `sentictl score` gathers (sentictl.score.CHUNK), so a
# long list costs bounded memory and batches exactly as score batches it.
_CHUNK = 512


class CacheDefault(enum.Enum):
    """The type of :data:`DEFAULT_CACHE` (an enum member, so it pickles and cannot be mistaken for a path)."""

    DEFAULT = "default"

    def __repr__(self) -> str:
        return "sentictl.DEFAULT_CACHE"


# ``cache=DEFAULT_CACHE``: the CLI's default cache file (SENTICTL_CACHE, else the user cache directory),
# resolved in the process that opens it (a worker on another machine uses its own).
DEFAULT_CACHE: Final = CacheDefault.DEFAULT
CacheOption = Union[str, "os.PathLike[str]", Literal[CacheDefault.DEFAULT], None]


class ModelMismatch(ManifestError):
    """An unpickled Classifier's model folder holds another model in this process (a different fingerprint)."""


@dataclass(frozen=True)
class Result:
    """One text's outcome, in the order the texts were given.

    A classified text has ``label``, ``score`` and ``scores`` (one probability per label, in the
    model's label order) and ``error`` None. A text the record rules refuse, or the model fails on,
    has ``error`` set to the reason code (``empty``, ``too_long``, ``not_string``,
    ``inference_error``; see :data:`sentictl.engine.records.REASONS`), ``message`` saying why,
    ``label``/``score`` None and ``scores`` empty: bad texts never raise.
    """

    text: str
    label: str | None
    score: float | None
    scores: Mapping[str, float]
    model: str
    cache_hit: bool = False
    truncated: bool = False  # the text was cut to the model's maximum length
    error: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the text was classified (``error`` is None)."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``sentictl score`` writes for this text; a bad one: ``{"text", "error", "message"}``."""
        if self.error is not None:
            return {"text": self.text, "error": self.error, "message": self.message}
        out: dict[str, Any] = {
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "scores": dict(self.scores),
            "model": self.model,
            "cache_hit": self.cache_hit,
        }
        if self.truncated:
            out["truncated"] = True
        return out


@dataclass(frozen=True)
class _Options:
    """What load() was given, as a Classifier re-opens with it (model folder aside)."""

    variant: str | None
    provider: str
    threads: int | None
    cache: str | CacheDefault | None
    long: str
    max_chars: int


def load(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    variant: str | None = None,
    provider: str = "auto",
    threads: int | None = None,
    cache: CacheOption = None,
    long: str = "truncate",
    max_chars: int = config.DEFAULT_MAX_CHARS,
) -> Classifier:
    """Load a model for classification; prints nothing (notices go to the ``sentictl`` logger).

    model_dir: a model folder (``sentictl export``'s or ``optimum-cli``'s); None chooses as the CLI
    does: ``SENTICTL_MODEL_DIR``, else ``models/finbert`` under the current directory, else the
    bundled model. variant/provider: as ``--variant``/``--provider``. threads: ONNX Runtime's
    intra-op threads, None for its default (every core, as one CLI process uses): give 1 (or
    cores // workers) to each classifier of a worker pool. cache: None (no cache), a SQLite file
    path, or :data:`DEFAULT_CACHE` (the CLI's default file). long: "truncate" or "chunk" (``--long``).
    max_chars: longer texts are ``too_long`` (``--max-chars``).

    Raises a :class:`SentictlError` subclass for a missing or broken model folder, ValueError for
    an option out of range.
    """
    options = _Options(variant, provider, threads, _cache_option(cache), long, max_chars)
    _check(options)
    return _open(model_dir, options)


def _cache_option(cache: CacheOption) -> str | CacheDefault | None:
    if cache is None or isinstance(cache, CacheDefault):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        path = os.fspath(cache)
        if not path:
            raise ValueError("cache='' names no file: use None for no cache or sentictl.DEFAULT_CACHE")
        from .engine.rediscache import is_url

        if is_url(path):  # a Redis shared by every worker: the same URL wherever the classifier goes
            return path
        # Absolute: a pickled classifier opens the same file whatever the worker's current directory.
        return os.path.abspath(os.path.expanduser(path))
    raise TypeError(f"cache must be None, a path or sentictl.DEFAULT_CACHE, not {type(cache).__name__}")


def _check(options: _Options) -> None:
    if options.provider not in config.PROVIDERS:
        raise ValueError(f"unknown provider {options.provider!r}: use one of {', '.join(config.PROVIDERS)}")
    if options.long not in config.LONG_MODES:
        raise ValueError(f"unknown long mode {options.long!r}: use one of {', '.join(config.LONG_MODES)}")
    if options.threads is not None and (
        isinstance(options.threads, bool) or not isinstance(options.threads, int) or options.threads < 1
    ):
        raise ValueError(f"threads must be a positive int or None, not {options.threads!r}")
    if isinstance(options.max_chars, bool) or not isinstance(options.max_chars, int) or options.max_chars < 1:
        raise ValueError(f"max_chars must be a positive int, not {options.max_chars!r}")


def _open(model_dir: str | os.PathLike[str] | None, options: _Options) -> Classifier:
    """Resolve the folder as the CLI does and load it (notices to logging)."""
    from .engine.core import Engine
    from .engine.model import load as load_model

    if model_dir is not None and not os.fspath(model_dir):
        raise ValueError("model_dir='' names no folder: use None for the CLI's choice")
    resolved = config.resolve_model_dir(model_dir)
    if model_dir is not None and not resolved.bundled:
        resolved = config.ResolvedModel(resolved.path, "given to sentictl.load()")
    with library_notices():
        model = load_model(
            resolved.path if model_dir is not None else None,
            quiet=True,
            provider=options.provider,
            variant=options.variant,
            threads=options.threads,
            long=options.long,
            run_tokens=config.DEFAULT_RUN_TOKENS,
        )
        cache = _open_cache(options.cache)
    return Classifier(Engine(model, cache, max_chars=options.max_chars), resolved, options)


def _open_cache(option: str | CacheDefault | None) -> ResultStore | None:
    if option is None:
        return None
    from .engine.cache import open_cache

    cache: ResultStore = open_cache(config.default_cache_location() if option is DEFAULT_CACHE else option)
    return cache


class Classifier:
    """A loaded model (and cache) that classifies texts; make one with :func:`sentictl.load`.

    Safe to share between threads. Pickles by reference (folder, options, fingerprint): unpickling
    loads the model again, once per process, and raises :class:`ModelMismatch` when the folder
    there holds another model.
    """

    def __init__(self, engine: Engine, resolved: config.ResolvedModel, options: _Options):
        self._engine = engine
        self._resolved = resolved
        self._options = options
        self._model_dir = Path(resolved.path).absolute()
        self._closed = False

    # ------------------------------------------------------------------ what it is
    @property
    def name(self) -> str:
        """The model's name and variant, as results carry it, e.g. "finsent-mini:int8"."""
        return self._engine.name

    @property
    def labels(self) -> list[str]:
        """The labels, in the model's order (the order of every result's ``scores``)."""
        return list(self._engine.labels)

    @property
    def fingerprint(self) -> str:
        """The model's verified fingerprint (its cache key space)."""
        return self._engine.fingerprint

    @property
    def model_dir(self) -> Path:
        """The model folder, absolute."""
        return self._model_dir

    @property
    def variant(self) -> str:
        return str(self._engine.model.variant)

    @property
    def provider(self) -> str:
        return str(self._engine.model.provider)

    @property
    def threads(self) -> int | None:
        """ONNX Runtime intra-op threads as given (None: its default, every core)."""
        return self._options.threads

    @property
    def cache_path(self) -> Path | None:
        """The cache file in use, or None."""
        cache = self._engine.cache
        return None if cache is None else Path(cache.path)

    def __repr__(self) -> str:
        return (
            f"<sentictl.Classifier {self.name} from {self._model_dir} provider={self.provider} "
            f"threads={self.threads} cache={self.cache_path}>"
        )

    def info(self, verify: bool = False) -> dict[str, Any]:
        """What ``sentictl info`` shows for this model, as a dict ("cache": this classifier's cache file
        or None). verify: also hash every file against manifest.json ("verified", "problems")."""
        from .modelinfo import describe

        with library_notices():
            return describe(self._engine.model, self._resolved, self.cache_path, verify=verify)

    # ------------------------------------------------------------------ classification
    def classify(self, texts: Iterable[str | None]) -> list[Result]:
        """One Result per text, in input order; bad texts carry a reason code in ``error`` (never raise).

        None is ``empty``; anything but a str or None is ``not_string``. Repeated texts are inferred
        once, cached ones (with a cache) not at all.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("classify() takes a list of texts: for one text, classify([text])[0]")
        results: list[Result] = []
        chunk: list[str | None] = []
        with library_notices():
            for text in texts:
                chunk.append(text)
                if len(chunk) == _CHUNK:
                    results += self._classify_chunk(chunk)
                    chunk = []
            if chunk:
                results += self._classify_chunk(chunk)
        return results

    def classify_columns(self, texts: Iterable[str | None]) -> dict[str, list[Any]]:
        """classify() as columns for a dataframe: "label", "score", one per label (its probability),
        "error" (None, or the reason code); lists in input order, no pandas or pyarrow needed.

        ``pandas.DataFrame(clf.classify_columns(df["text"]))`` or ``pyarrow.table(...)`` builds the frame.
        A label named like another column ("label", "score", "error") gets the column ``scores.<label>``.
        """
        from .columns import is_missing, to_columns

        return to_columns(self.classify(None if is_missing(t) else t for t in texts), self.labels)

    def _classify_chunk(self, texts: Sequence[str | None]) -> list[Result]:
        from .engine.records import Record

        verdicts = [self._verdict(t) for t in texts]
        records = {i: v for i, v in enumerate(verdicts) if isinstance(v, Record)}
        outcomes = dict(zip(records, self._engine.classify_each([r.text for r in records.values()])))
        return [
            _result(given, outcomes[i] if isinstance(verdict, Record) else verdict, self.name)
            for i, (given, verdict) in enumerate(zip(texts, verdicts))
        ]

    def _verdict(self, text: object) -> Verdict:
        from .engine.records import BadRecord

        if text is None:
            return BadRecord("empty", "None: nothing to classify")
        if not isinstance(text, str):
            return BadRecord("not_string", f"not a string but {type(text).__name__}")
        return self._engine.check(text)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the cache (later calls run uncached; the model is freed with the object)."""
        self._closed = True
        cache = self._engine.cache
        if cache is not None:
            cache.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # By reference: the folder (the bundled model by name, as its path differs between installs),
        # the variant and provider this process chose, and the fingerprint the receiver must find.
        options = _Options(
            self.variant,
            self.provider,
            self._options.threads,
            self._options.cache,
            self._options.long,
            self._options.max_chars,
        )
        where = None if self._resolved.bundled else str(self._model_dir)
        return _reopen, (where, options, self.fingerprint)


_REOPENED: dict[tuple[str | None, _Options, str], Classifier] = {}
_REOPEN_LOCK = threading.Lock()


def _reopen(model_dir: str | None, options: _Options, fingerprint: str) -> Classifier:
    """Unpickle a Classifier: load its folder once per process, refusing one that holds another model."""
    key = (model_dir, options, fingerprint)
    with _REOPEN_LOCK:
        found = _REOPENED.get(key)
        if found is not None and not found._closed:  # a task may have closed it: then open a fresh one
            return found
        path = config.bundled_model_dir() if model_dir is None else Path(model_dir)
        clf = _open(path, options)
        if model_dir is None:  # the bundled model, and so it stays when pickled again
            clf._resolved = config.ResolvedModel(path, "the bundled model, as the pickled classifier ran", bundled=True)
        if clf.fingerprint != fingerprint:
            clf.close()
            raise ModelMismatch(
                f"{path} holds another model in this process (fingerprint {clf.fingerprint}; the pickled "
                f"classifier ran {fingerprint}): give every worker the same model folder"
            )
        _REOPENED[key] = clf
        return clf


def _result(given: str | None, outcome: EngineResult | BadRecord, model: str) -> Result:
    """A text's Result from the engine's result for it, or from the BadRecord that refused it."""
    from .engine.records import BadRecord

    if isinstance(outcome, BadRecord):
        text = given if isinstance(given, str) else ""
        return Result(text, None, None, {}, model, error=outcome.reason, message=outcome.message)
    return Result(
        text=outcome["text"],
        label=outcome["label"],
        score=float(outcome["score"]),
        scores={k: float(v) for k, v in outcome["scores"].items()},
        model=outcome["model"],
        cache_hit=bool(outcome["cache_hit"]),
        truncated=bool(outcome.get("truncated", False)),
    )
