"""``score --ray``'s outputs: Parquet part files written by the cluster, and the tally of finished rows.

A Parquet output is a directory: each write task of the job writes its rows to one file,
``part-<task>.parquet`` (nine digits), in the order the job hands them over, so with order
preserved the files in name order hold the rows in input order (``pyarrow.parquet.read_table(dir)``
and ``sentictl score dir/`` read them so). Ray Data's ``write_parquet`` is not used: it writes
through ``pyarrow.dataset.write_dataset`` with threads and without ``preserve_order``, which can
reorder the rows inside a file. The write tasks return what they wrote (counts, the bad rows'
places and reasons), so the driver reports and counts without reading the files back.

The summary and the --errors reports come from the finished rows in output order (:class:`Tally`):
with order preserved the n-th row is the n-th input record, whose source and line the job's
:class:`~sentictl.raysources.Origins` know; without, a report names no place.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.data import Datasink

from .engine.records import REASONS
from .errors import OutputError, SentictlError
from .raysources import Origins

PART = "part-{:09d}.parquet"
PARTS = "part-*.parquet"

Report = Callable[[str | None, int | None, str, str], None]


@dataclass
class Part:
    """What a run of finished rows held: counts, and each bad row's place in the run and reason."""

    task: int = 0
    rows: int = 0
    texts: int = 0
    cache_hits: int = 0
    empty: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def add(self, table: Any) -> None:
        """Count a table of result rows (its ``error`` and ``cache_hit`` columns) after the rows so far."""
        errors = table.column("error").to_pylist()
        hits = table.column("cache_hit").to_pylist()
        for offset, (reason, hit) in enumerate(zip(errors, hits)):
            if reason is None:
                self.texts += 1
                self.cache_hits += bool(hit)
            elif reason == "empty":
                self.empty += 1
            else:
                self.bad.append((self.rows + offset, reason))
        self.rows += len(errors)


class Tally:
    """The job's counts, and a report (source, line, reason, message) per bad row, from runs of rows in order."""

    def __init__(self, origins: Origins | None, report: Report):
        self.origins, self.report = origins, report
        self.total = Part()

    def add(self, part: Part) -> None:
        for offset, reason in part.bad:
            source, line = self.origins.where(self.total.rows + offset) if self.origins else (None, None)
            self.report(source, line, reason, REASONS.get(reason, reason))
        self.total.rows += part.rows
        self.total.texts += part.texts
        self.total.cache_hits += part.cache_hits
        self.total.empty += part.empty

    def counts(self, expected: int) -> dict[str, int]:
        """The summary's counts, once every row is in (a job that lost or repeated a row is an error)."""
        t = self.total
        if t.rows != expected:
            raise SentictlError(f"the Ray job returned {t.rows:,} rows for {expected:,} input records")
        errors = t.rows - t.texts - t.empty
        return {"rows": t.rows, "texts": t.texts, "cache_hits": t.cache_hits, "empty": t.empty, "errors": errors}


class PartFiles(Datasink[Part]):
    """A Ray Data sink: each write task's rows to ``<path>/part-<task>.parquet``, cast to ``schema``."""

    def __init__(self, path: str, schema: Any):
        self.path, self.schema = path, schema
        self.parts: list[Part] = []

    def write(self, blocks: Iterable[Any], ctx: Any) -> Part:
        import pyarrow.parquet as pq
        from ray.data.block import BlockAccessor

        part = Part(task=ctx.task_idx)
        writer = None
        try:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if table.num_rows:
                    table = table.select(self.schema.names).cast(self.schema)
                    if writer is None:
                        path = os.path.join(self.path, PART.format(ctx.task_idx))
                        writer = pq.ParquetWriter(path, self.schema, compression="zstd")
                    writer.write_table(table)
                    part.add(table)
        finally:
            if writer is not None:
                writer.close()
        return part

    def on_write_complete(self, write_result: Any) -> None:
        returns = getattr(write_result, "write_returns", write_result)
        self.parts = sorted((p for p in returns if isinstance(p, Part)), key=lambda p: p.task)


def write_parts(scored: Any, path: str, schema: Any, tally: Tally) -> None:
    """The job's rows to a directory of part files (a former run's part files first removed), tallied in order."""
    import pyarrow.parquet as pq

    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    for name in fnmatch.filter(os.listdir(path), PARTS):
        os.remove(os.path.join(path, name))
    sink = PartFiles(path, schema)
    scored.write_datasink(sink)
    if not sink.parts:  # no rows: one empty file, so the directory still has the columns
        pq.write_table(schema.empty_table(), os.path.join(path, PART.format(0)), compression="zstd")
    for part in sink.parts:
        tally.add(part)


def check_out_dir(path: str, inputs: Sequence[str], cache: str | None) -> None:
    """Before any work: -o under --ray names a directory to fill, absent (where it can be made) or
    holding nothing but a former run's part files, none of them an input."""
    from .outputs import check_output_path

    if not os.path.isdir(path):
        if os.path.exists(path):
            raise OutputError(
                f"cannot write -o to {path}: --ray writes Parquet as a directory of part files, and it is a "
                f"file (remove it, or name a directory)"
            )
        check_output_path(path, inputs, "-o", cache=cache)
        return
    others = sorted(n for n in os.listdir(path) if not fnmatch.fnmatch(n, PARTS))
    if others:
        raise OutputError(
            f"cannot write -o to {path}: it holds {others[0]}, not only part files of a former --ray run "
            f"(name a new or an empty directory)"
        )
    here = os.path.realpath(path)
    for name in inputs:
        if name != "-" and os.path.dirname(os.path.realpath(name)) == here:
            raise OutputError(f"-o {path} holds the input {name}: choose another directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write -o to {path}: Permission denied")
