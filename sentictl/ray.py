"""Ray Data for sentictl (the ``ray`` extra): :class:`Classify` for ``map_batches``, and ``score --ray``.

    import ray, sentictl.ray
    ds = ray.data.read_parquet("news/")
    scored = ds.map_batches(sentictl.ray.Classify, fn_constructor_kwargs={"model": "models/finbert",
                            "column": "headline"}, concurrency=4, batch_format="pyarrow")

Each actor loads the model once (``sentictl.load``) and classifies whole batches; the columns it adds
are those of ``score``'s Parquet output: ``label``, ``score``, ``score_<label>`` per label,
``model``, ``cache_hit``, ``error`` (the reason code, null when scored). This module is named like
the ``ray`` package but imports it only inside functions, where ``import ray`` (absolute) finds the
package: importing ``sentictl`` never loads Ray or pyarrow.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import socket
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from . import config
from .engine.records import REASONS, BadRecord

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
    differs (``ModelMismatch``, one line). The other arguments are ``sentictl.load``'s.
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
        results = self.clf.classify(batch.column(self.column).to_pylist())
        outcomes = [r.as_dict() if r.ok else BadRecord(r.error or "", r.message or "") for r in results]
        scored = result_table({}, {}, self.clf.labels, outcomes, self.clf.name)
        kept = batch if self.keep is None else batch.select(self.keep)
        for name in scored.column_names:
            if name in kept.column_names:  # a result column replaces an input column of the same name
                kept = kept.drop_columns([name])
        for name, values in zip(scored.column_names, scored.columns):
            kept = kept.append_column(name, values)
        return kept


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


def run(
    clf: Any,
    inputs: Sequence[str],
    *,
    address: str | None,
    column: str,
    keep: Sequence[str],
    workers: int | None,
    threads: int,
    preserve_order: bool,
    write_rows: Any,
    report: Any,
    progress: bool,
) -> dict[str, int]:
    """``score --ray``: read the Parquet inputs → map_batches(Classify) on an actor pool → rows, in order, to
    ``write_rows(table)`` on this driver; ``report(source, row, reason, message)`` for each bad row.

    Output is written here, from the stream of finished blocks: a block a killed actor did not finish is
    redone by Ray (actors restart, tasks retry) and reaches the output once. Returns counts for the summary.
    """
    ray = require_ray()
    import pyarrow.parquet as pq

    started_here = not ray.is_initialized()
    local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
    if started_here:
        # A local cluster gets one logical CPU more than the machine's cores: Ray Data's file listing and
        # read tasks (1 CPU each, next to nothing next to inference) then run beside an actor pool that
        # holds every core, instead of waiting for a free one forever.
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            num_cpus=(os.cpu_count() or 1) + 1 if local else None,
        )
    # Ray Data's own INFO lines and deprecation notes are not ours to print; its progress bars are (--progress).
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = preserve_order
        context.enable_progress_bars = progress
        if workers is None:  # every CPU but the one the reads need
            workers = max(1, (int(ray.cluster_resources().get("CPU", 1)) - 1) // threads)
        sizes = [(name, pq.ParquetFile(name).metadata.num_rows) for name in inputs]
        ds = ray.data.read_parquet(list(inputs), columns=list(dict.fromkeys([column, *keep])), shuffle=None)
        # Blocks of at most BATCH_ROWS rows, and at least 4 per actor, so that a single file (or a small job)
        # still feeds every actor (streaming, no shuffle).
        total = sum(n for _, n in sizes)
        rows = max(16, min(BATCH_ROWS, -(-total // (workers * 4))))
        ds = ds.repartition(target_num_rows_per_block=rows)
        # An actor that dies is restarted and its unfinished batch retried: Ray Data's defaults for an actor
        # pool (max_restarts=-1, max_task_retries=-1).
        scored = ds.map_batches(
            Classify,
            fn_constructor_kwargs={"model": clf, "column": column, "keep": list(keep), "fingerprint": clf.fingerprint},
            batch_size=rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
        )
        counts = {"rows": 0, "texts": 0, "cache_hits": 0, "empty": 0, "errors": 0}
        starts = list(itertools.accumulate((n for _, n in sizes), initial=0))  # each file's first row, 0-based
        warnings.filterwarnings("ignore", module=r"ray\.data\..*")
        for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            write_rows(table)
            for offset, (reason, hit) in enumerate(
                zip(table.column("error").to_pylist(), table.column("cache_hit").to_pylist())
            ):
                if reason is None:
                    counts["texts"] += 1
                    counts["cache_hits"] += bool(hit)
                elif reason == "empty":
                    counts["empty"] += 1
                else:
                    counts["errors"] += 1
                    if preserve_order:  # the n-th output row is the n-th input row: which file, which row
                        n = counts["rows"] + offset
                        i = bisect.bisect_right(starts, n) - 1
                        report(sizes[i][0], n - starts[i] + 1, reason, REASONS.get(reason, reason))
                    else:
                        report(None, None, reason, REASONS.get(reason, reason))
            counts["rows"] += table.num_rows
        return counts
    finally:
        if started_here:
            ray.shutdown()
