"""``score --ray``'s inputs: the Ray dataset each job reads, and where each of its rows came from.

Two ways in, chosen per job:

- Every input Parquet (files, directories, globs): ``ray.data.read_parquet`` on the cluster, the text
  and --keep columns only. Its rows are checked where they are classified (:class:`sentictl.ray.Classify`:
  a null is ``empty``, a value that is not a string ``not_string``, a text over --max-chars
  ``too_long``), the rules of score's own Parquet reader.
- Any other input in the job (text lines, JSON lines, CSV/TSV, a JSON array, stdin): no Ray Data
  reader has score's record rules (byte-order marks and UTF-16, lines bounded while they are read,
  ``bad_json``/``bad_csv``/``missing_field`` rows, dotted --field names), so the driver reads every
  input of the job with sentictl's own readers (``sentictl.io.read_source``; a Parquet input among
  them too, for one ordered stream), in blocks of :data:`BLOCK_ROWS` rows that go to the object store
  one by one (``ray.put``: the driver holds one block; the store spills to disk past its memory) and
  become the dataset (``from_arrow_refs``). A row the reader refused keeps its reason in
  :data:`REASON` and is not classified.

Both give one row per input record, in input order, and an :class:`Origins` that names the source
and line (the reader's position) of the n-th row, for the --errors reports.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine.records import BadRecord, Record, Verdict
from .errors import OutputError

# The columns of a driver-read block besides the --keep ones: the text (null for a refused record) and the
# reason the reader refused it (null for a record to classify). Classify drops them from its output.
TEXT = "__sentictl_text"
REASON = "__sentictl_error"
# Records per block the driver puts in the object store (re-cut by the job to its own block size).
BLOCK_ROWS = 1024


@dataclass
class Origins:
    """Where each row of a job came from, as runs of rows whose positions count up by one.

    A Parquet file is one run (rows 1..n); a text or JSON file is one run unless its reader skipped
    a position (a CSV row that spans lines starts a new run), so this stays small for any size.
    """

    starts: list[int] = field(default_factory=list)  # the job's row index where each run begins
    runs: list[tuple[str, int]] = field(default_factory=list)  # (source, position of the run's first row)
    total: int = 0

    def add_file(self, source: str, rows: int) -> None:
        """A whole file whose rows are at positions 1..rows."""
        if rows:
            self.starts.append(self.total)
            self.runs.append((source, 1))
            self.total += rows

    def add(self, source: str, position: int) -> None:
        """The next row, read at ``position`` of ``source``."""
        if self.runs:
            last_source, first = self.runs[-1]
            if last_source == source and first + (self.total - self.starts[-1]) == position:
                self.total += 1
                return
        self.starts.append(self.total)
        self.runs.append((source, position))
        self.total += 1

    def where(self, row: int) -> tuple[str, int]:
        """(source, position) of the job's row ``row`` (0-based)."""
        i = bisect.bisect_right(self.starts, row) - 1
        source, first = self.runs[i]
        return source, first + row - self.starts[i]


@dataclass
class Source:
    """What a job reads: its inputs and score's options for them."""

    inputs: Sequence[str]
    column: str = "text"
    field: str = "text"
    fmt: str | None = None
    keep: Sequence[str] = ()
    max_chars: int = 0


def read_on_cluster(source: Source) -> bool:
    """Whether Ray Data reads the inputs itself (all Parquet files), or the driver does."""
    from .io import detect_format

    return all(n != "-" and detect_format(n, source.fmt) == "parquet" for n in source.inputs)


def dataset(ray: Any, source: Source) -> tuple[Any, Origins, str, dict[str, Any]]:
    """The job's dataset, its origins, the name of its text column and the Arrow types of its --keep columns."""
    from .parquet import keep_types, require_pyarrow

    pq = require_pyarrow()
    types = keep_types(source.inputs, source.keep)
    origins = Origins()
    if read_on_cluster(source):
        for name in source.inputs:
            origins.add_file(name, pq.ParquetFile(name).metadata.num_rows)
        columns = list(dict.fromkeys([source.column, *source.keep]))
        return ray.data.read_parquet(list(source.inputs), columns=columns, shuffle=None), origins, source.column, types
    refs = [ray.put(block) for block in _blocks(source, origins, types)]
    if not refs:  # nothing to read: one empty block, so the job still has its columns
        refs = [ray.put(_table([], source.keep, types))]
    return ray.data.from_arrow_refs(refs), origins, TEXT, types


def _blocks(source: Source, origins: Origins, types: dict[str, Any]) -> Iterator[Any]:
    """Arrow blocks of every input's verdicts, in order, read with score's own readers (one block held)."""
    from .io import detect_format, open_input, read_source
    from .score import read_guarded

    for name in source.inputs:
        stream = open_input(name)
        try:
            fmt = detect_format(name, source.fmt)
            read = functools.partial(
                read_source, stream, name, fmt, source.field, source.column, source.max_chars, keep=source.keep
            )
            chunk: list[Verdict] = []
            for verdict in read_guarded(name, read):  # the first read (encoding sniffing) is guarded too
                origins.add(name, verdict.position)
                chunk.append(verdict)
                if len(chunk) == BLOCK_ROWS:
                    yield _table(chunk, source.keep, types)
                    chunk = []
            if chunk:
                yield _table(chunk, source.keep, types)
        finally:
            if name != "-":
                stream.close()


def _table(verdicts: Sequence[Verdict], keep: Sequence[str], types: dict[str, Any]) -> Any:
    """One block: the --keep columns, the text and the reader's reason. A --keep column's type is fixed
    by its first block (as score's Parquet writer fixes it by its first chunk)."""
    import pyarrow as pa

    from .score import kept_values

    rows = [kept_values(getattr(v, "data", None), keep) for v in verdicts]
    arrays: dict[str, Any] = {}
    for name in keep:
        values = [row[name] for row in rows]
        kind = types.get(name)
        if kind is None and all(v is None for v in values):
            kind = pa.string()  # nothing to infer from: a later block's strings must still fit
        try:
            arrays[name] = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OutputError(f"cannot write results: a --keep value does not fit its column's type ({exc})") from None
        types.setdefault(name, arrays[name].type)
    arrays[TEXT] = pa.array([v.text if isinstance(v, Record) else None for v in verdicts], type=pa.string())
    arrays[REASON] = pa.array([v.reason if isinstance(v, BadRecord) else None for v in verdicts], type=pa.string())
    return pa.table(arrays)
