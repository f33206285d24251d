"""Ray Data for sentictl (the ``ray`` extra): :class:`Classify` for ``map_batches``, and ``score --ray``.

    import ray, sentictl.ray
    ds = ray.data.read_parquet("news/")
    scored = ds.map_batches(sentictl.ray.Classify, fn_constructor_kwargs={"model": "models/finbert",
                            "column": "headline"}, concurrency=4, batch_format="pyarrow")

Each actor loads the model once (``sentictl.load``) and classifies whole batches; the columns it adds
are those of ``score``'s Parquet output: ``label``, ``score``, ``score_<label>`` per label,
``model``, ``cache_hit``, ``error`` (the reason code, null when scored). ``score --ray`` is
:func:`run`: its inputs are :mod:`sentictl.raysources`, its outputs :mod:`sentictl.raysinks`. This
module is named like the ``ray`` package but imports it only inside functions, where ``import ray``
(absolute) finds the package: importing ``sentictl`` never loads Ray or pyarrow.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import config
from .engine.records import REASONS, BadRecord
from .raysources import REASON, TEXT, Source

if TYPE_CHECKING:
    from .api import Result
    from .raysinks import Report

# Tests only: when set, every batch an actor starts first creates a file "<pid>-<uuid>" in this folder
# (what a test waits for before killing that actor's process mid-run).
TRACE_ENV = "SENTICTL_RAY_TRACE_DIR"
# Rows per batch an actor classifies: many batches per worker balance the pool, each is large enough
# for full token-budget runs.
BATCH_ROWS = 1024


class Classify:
    """A callable class for ``Dataset.map_batches``: one classifier per actor, results as Arrow columns.

    model: a model folder, None (chosen as the CLI does), or a :class:`sentictl.Classifier`, which
    travels by reference and refuses a worker whose folder holds another model. column: the text
    column. keep: the input columns to return (None: all of them). threads: ONNX Runtime threads
    per actor (1, or cores // actors per node). fingerprint: refuse a model folder whose fingerprint
    differs (``ModelMismatch``, one line). The other arguments are ``sentictl.load``'s. A batch with
    a ``raysources.REASON`` column (the blocks score --ray's driver reads) keeps the reason of each row
    its reader refused, unclassified; that column and ``raysources.TEXT`` are not returned.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        column: str = "text",
        keep: Sequence[str] | None = None,
        threads: int | None = 1,
        variant: str | None = None,
        provider: str = "auto",
        cache: Any = None,
        long: str = "truncate",
        max_chars: int = config.DEFAULT_MAX_CHARS,
        fingerprint: str | None = None,
    ):
        import sentictl

        if isinstance(model, sentictl.Classifier):
            self.clf = model  # unpickled here: already checked against the fingerprint it was loaded with
        else:
            self.clf = sentictl.load(
                model, variant=variant, provider=provider, threads=threads, cache=cache, long=long, max_chars=max_chars
            )
        if fingerprint is not None and self.clf.fingerprint != fingerprint:
            raise sentictl.ModelMismatch(
                f"{socket.gethostname()}: {self.clf.model_dir} holds another model (fingerprint "
                f"{self.clf.fingerprint[:16]}, expected {fingerprint[:16]}): give every node the same model folder"
            )
        self.column = column
        self.keep = None if keep is None else list(keep)

    def __call__(self, batch: Any) -> Any:
        """The batch's kept columns plus the result columns (a pyarrow Table; pandas and numpy batches work too)."""
        import pyarrow as pa

        from .parquet import result_table

        trace = os.environ.get(TRACE_ENV)
        if trace:
            open(os.path.join(trace, f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
        if not isinstance(batch, pa.Table):
            batch = pa.Table.from_pandas(batch, preserve_index=False) if hasattr(batch, "to_dict") else pa.table(batch)
        texts = batch.column(self.column).to_pylist()
        # A row the driver's reader refused (score --ray on a text, JSON or CSV input) keeps its reason.
        refused = batch.column(REASON).to_pylist() if REASON in batch.column_names else [None] * len(texts)
        results = iter(self.clf.classify([t for t, r in zip(texts, refused) if r is None]))
        outcomes = [_outcome(next(results)) if r is None else BadRecord(r, REASONS.get(r, r)) for r in refused]
        scored = result_table({}, {}, self.clf.labels, outcomes, self.clf.name)
        hidden = [name for name in (TEXT, REASON) if name in batch.column_names]
        kept = batch.drop_columns(hidden) if self.keep is None else batch.select(self.keep)
        for name in scored.column_names:
            if name in kept.column_names:  # a result column replaces an input column of the same name
                kept = kept.drop_columns([name])
        for name, values in zip(scored.column_names, scored.columns):
            kept = kept.append_column(name, values)
        return kept


def _outcome(result: Result) -> dict[str, Any] | BadRecord:
    """A classify() result as result_table takes it: its dict, or the reason it could not be scored."""
    return result.as_dict() if result.ok else BadRecord(result.error or "", result.message or "")


def one_line(exc: BaseException) -> Exception:
    """What Ray raised, as the SentictlError a user can act on: an actor's refusal of its model folder
    keeps its own line; anything else is its first line."""
    from .api import ModelMismatch
    from .errors import SentictlError

    text = str(exc)
    found = re.search(
        r"[^\n:]*: \S+ holds another model \(fingerprint [^\n]*|\S+ holds another model in this "
        r"process[^\n]*",
        text,
    )
    if found:
        return ModelMismatch(found.group(0).strip())
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return SentictlError(f"the Ray job failed: {first}")


def require_ray() -> Any:
    """The ray package, or one line saying which extra to install."""
    from .errors import InputError

    try:
        import ray.data  # noqa: F401

        import ray
    except ImportError:
        raise InputError("--ray needs Ray Data: pip install 'sentictl[ray]'") from None
    return ray


@dataclass
class Job:
    """A ``score --ray`` job: what it reads, where it runs, and where its Parquet goes (None: to the driver)."""

    source: Source
    address: str | None = None
    workers: int | None = None
    threads: int = 1
    preserve_order: bool = True
    progress: bool = False
    out_dir: str | None = None


def run(clf: Any, job: Job, *, write_rows: Callable[[Any], None], report: Report) -> dict[str, int]:
    """``score --ray``: the job's dataset (:mod:`sentictl.raysources`) → map_batches(Classify) on an actor
    pool → Parquet part files written by the cluster into ``job.out_dir``, or else each finished block,
    in order, to ``write_rows(table)`` on this driver; ``report(source, row, reason, message)`` for each
    bad row. Returns counts for the summary.

    A block a killed actor did not finish is redone by Ray (actors restart, tasks retry) and reaches
    the output once: the driver takes finished blocks only, and a part file is named by its write
    task, so a retried task writes the same file again.
    """
    ray = require_ray()
    from . import raysinks, raysources

    started_here = _connect(ray, job.address)
    try:
        _configure(ray, job)
        workers = job.workers or max(1, (int(ray.cluster_resources().get("CPU", 1)) - 1) // job.threads)
        ds, origins, column, types = raysources.dataset(ray, job.source)
        # Blocks of at most BATCH_ROWS rows, and at least 4 per actor, so that a single file (or a small job)
        # still feeds every actor (streaming, no shuffle).
        rows = max(16, min(BATCH_ROWS, -(-origins.total // (workers * 4))))
        # An actor that dies is restarted and its unfinished batch retried: Ray Data's defaults for an actor
        # pool (max_restarts=-1, max_task_retries=-1).
        scored = ds.repartition(target_num_rows_per_block=rows).map_batches(
            Classify,
            fn_constructor_kwargs={
                "model": clf,
                "column": column,
                "keep": list(job.source.keep),
                "fingerprint": clf.fingerprint,
            },
            batch_size=rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=job.threads,
        )
        tally = raysinks.Tally(origins if job.preserve_order else None, report)
        if job.out_dir is not None:
            raysinks.write_parts(scored, job.out_dir, _schema(clf, job.source.keep, types), tally)
        else:
            for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                write_rows(table)
                part = raysinks.Part()
                part.add(table)
                tally.add(part)
        return tally.counts(origins.total)
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (RAY_ADDRESS, or a local one of this machine's cores when None);
    whether this call started Ray (and so stops it)."""
    if ray.is_initialized():
        return False
    local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
    # A local cluster gets one logical CPU more than the machine's cores: Ray Data's file listing, read and
    # write tasks (1 CPU each, next to nothing next to inference) then run beside an actor pool that holds
    # every core, instead of waiting for a free one forever.
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        num_cpus=(os.cpu_count() or 1) + 1 if local else None,
    )
    return True


def _configure(ray: Any, job: Job) -> None:
    """Ray Data's order and progress bars for this job; its own INFO lines and deprecation notes are not ours to print."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # "Progress bars disabled. To enable, set ..." names a Python setting; score's --progress is the switch.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray\.data\..*")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = job.preserve_order
    context.enable_progress_bars = job.progress


def _schema(clf: Any, keep: Sequence[str], types: dict[str, Any]) -> Any:
    """The Arrow schema of a Parquet result row: the --keep columns (their input types), then the result columns."""
    from .parquet import result_table

    return result_table({k: [] for k in keep}, types, clf.labels, [], clf.name).schema
