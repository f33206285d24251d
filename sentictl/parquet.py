"""Parquet in and out for ``score`` (the ``parquet`` extra: pyarrow), and the result columns Ray shares.

Reading streams record batches (about 1 MB, at most 4,096 rows, of the text and --keep columns at a
time), so memory does not grow with the file: it is bounded by the largest page, which Arrow holds
whole (twice a dictionary page while it decodes one); a directory of Parquet files and a glob are read
in sorted name order. Writing gives ONE ROW PER INPUT ROW, in input order: the --keep columns (with
their Arrow types), ``label``, ``score``, ``score_<label>`` per label, ``model``, ``cache_hit`` and
``error`` (the reason code, null when scored), so a bad row is kept with its reason, never dropped.

pyarrow is imported inside functions: the plain install and the hot path never load it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from .engine.records import BadRecord, Verdict, check_text
from .errors import InputError, OutputError

# Rows per record batch read: small enough for flat memory, big enough that Arrow's per-batch cost vanishes;
# fewer when the rows are large (READ_BYTES per batch, from the file's own column sizes).
READ_ROWS = 4096
READ_BYTES = 1 << 20
# Column chunks are read through a buffer of this size, never whole (a writer may put 1 GB in one row group).
READ_BUFFER = 4 << 20
# Row groups are read in spans of about this many bytes (of the columns read), freed memory handed back after each.
SPAN_BYTES = 64 << 20
# The columns a Parquet result row has besides the --keep ones and the score_<label> ones.
RESULT_COLUMNS = ("label", "score", "model", "cache_hit", "error")
SUFFIXES = (".parquet", ".parq")


@dataclass(frozen=True)
class BadRow(BadRecord):
    """A bad record that still carries its row (for the --keep columns of its output row)."""

    data: Any = None


def require_pyarrow(what: str = "Parquet") -> Any:
    """pyarrow.parquet, or one line saying which extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{what} needs pyarrow: pip install 'sentictl[parquet]'") from None
    return pq


def is_parquet_name(name: str) -> bool:
    """A name that reads as Parquet: a .parquet file, a directory, or a glob (score expands them)."""
    return name != "-" and (name.lower().endswith(SUFFIXES) or os.path.isdir(name) or glob.has_magic(name))


def expand(names: Sequence[str], fmt: str | None) -> list[str]:
    """Inputs with every directory (its Parquet files) and glob (its matches) replaced by files, sorted.

    A directory is read as Parquet (its *.parquet files, recursively, in name order: how Spark, Dask
    and Ray write part files); a glob that matches nothing is an error, as a missing file is.
    """
    out: list[str] = []
    for name in names:
        if name != "-" and os.path.isdir(name):
            files = _parquet_files(name)
            if not files:
                raise InputError(f"cannot read {name}: Is a directory")  # with no Parquet files: as before
            out += files
        elif name != "-" and glob.has_magic(name) and not os.path.exists(name):
            files = sorted(p for p in glob.glob(name, recursive=True) if os.path.isfile(p))
            if not files:
                raise InputError(f"cannot read {name}: no file matches")
            out += files
        else:
            out.append(name)
    return out


def _parquet_files(root: str) -> list[str]:
    """The Parquet files under a directory, in name order; hidden and _-prefixed entries (_SUCCESS,
    _temporary, .venv) are skipped, as Spark and Arrow skip them."""
    found: list[str] = []
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(top, f) for f in files if f.lower().endswith(SUFFIXES) and not f.startswith((".", "_"))]
    return sorted(found)


def check_columns(inputs: Sequence[str], fmt: str | None, column: str) -> None:
    """Before any work: every Parquet input is Parquet and has the text column (footers only)."""
    from .io import detect_format

    for name in inputs:
        if name != "-" and detect_format(name, fmt) == "parquet":
            names = schema_of(name).names
            if column not in names:
                raise InputError(f"{name} has no column {column!r} (it has: {', '.join(names[:20])}); use --column")


def schema_of(path: str) -> Any:
    """The Arrow schema of a Parquet file (InputError when it is not one)."""
    pq = require_pyarrow()
    try:
        return pq.read_schema(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as Parquet: {exc}") from None


def read_parquet(
    stream: IO[bytes], source: str, column: str, max_chars: int, keep: Sequence[str] = ()
) -> Iterator[Verdict]:
    """The engine's verdict for every row of a Parquet file, in order (``line``: the row number, from 1).

    Only the text column and the top-level --keep columns are read. A null is ``empty``, a value that
    is not a string ``not_string``; every verdict carries the row's --keep values (a BadRow for bad ones).
    """
    pq = require_pyarrow()
    import pyarrow as pa

    name = getattr(stream, "name", None)
    try:
        # The path lets Arrow do its own (faster) I/O; the stream only served the input checks.
        parquet = pq.ParquetFile(
            name if isinstance(name, str) and name != "<stdin>" else stream, buffer_size=READ_BUFFER, pre_buffer=False
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {source} as Parquet: {exc}") from None
    names = parquet.schema_arrow.names
    if column not in names:
        raise InputError(f"{source} has no column {column!r} (it has: {', '.join(names[:20])}); use --column")
    kept = list(dict.fromkeys(k for k in (n.split(".")[0] for n in keep) if k in names))
    position = 0
    try:
        for texts, rows in _batches(parquet, column, kept if keep else None):
            for text, row in zip(texts, rows):
                position += 1
                if isinstance(text, str):
                    verdict = check_text(text, max_chars, source, position, data=row)
                    yield verdict if not isinstance(verdict, BadRecord) else BadRow(*_fields(verdict), row)
                else:
                    yield _not_text(text, row, column, source, position)
            del texts, rows  # before the next batch is read
    except pa.ArrowException as exc:
        raise InputError(f"cannot read {source} as Parquet: {exc}") from None


def _batches(parquet: Any, column: str, kept: list[str] | None) -> Iterator[tuple[list[Any], list[Any]]]:
    """(texts, rows) a record batch at a time, in order: each row {kept column: value}, or None when
    ``kept`` is None.

    Row groups are read a span at a time, and the memory Arrow freed is handed back after each: Arrow
    holds a whole page (and the dictionary it decodes from a dictionary page) while it reads a column
    chunk, and what one large row group held must not stay resident into the next one's peak. A batch
    is let go, by Arrow and Python alike, before the next one is read.
    """
    import pyarrow as pa

    wanted = list(dict.fromkeys([column, *(kept or ())]))
    size = _batch_rows(parquet, wanted)
    for span in _spans(parquet.metadata, wanted):
        for batch in parquet.iter_batches(batch_size=size, row_groups=span, columns=wanted, use_threads=False):
            texts = batch.column(column).to_pylist()
            # Only the kept columns travel with a row (a huge text that is too_long is not held on to).
            rows = batch.select(kept).to_pylist() if kept is not None else [None] * len(texts)
            del batch
            yield texts, rows
            del texts, rows
        pa.default_memory_pool().release_unused()


def _not_text(text: Any, row: Any, column: str, source: str, position: int) -> BadRow:
    """The verdict for a value that is no string: a null is empty, anything else not_string."""
    if text is None:
        return BadRow("empty", "null: nothing to classify", source, position, row)
    return BadRow("not_string", f"column {column!r} holds {type(text).__name__}, not a string", source, position, row)


def _column_bytes(group: Any, columns: Sequence[str]) -> int:
    """The uncompressed bytes of a row group's chunks of ``columns`` (and of their nested fields)."""
    return sum(
        group.column(c).total_uncompressed_size
        for c in range(group.num_columns)
        if group.column(c).path_in_schema.split(".")[0] in columns
    )


def _spans(meta: Any, columns: Sequence[str]) -> Iterator[list[int]]:
    """The row groups in runs of at most SPAN_BYTES of ``columns`` (a larger group is a run of its own)."""
    span: list[int] = []
    size = 0
    for g in range(meta.num_row_groups):
        group = _column_bytes(meta.row_group(g), columns)
        if span and size + group > SPAN_BYTES:
            yield span
            span, size = [], 0
        span.append(g)
        size += group
    if span:
        yield span


def _batch_rows(parquet: Any, columns: Sequence[str]) -> int:
    """Rows per record batch: READ_ROWS, or fewer so that a batch of the widest row group's rows is about READ_BYTES."""
    meta = parquet.metadata
    widest = 0.0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows:
            widest = max(widest, _column_bytes(group, columns) / group.num_rows)
    return max(1, min(READ_ROWS, int(READ_BYTES / widest) if widest else READ_ROWS))


def _fields(bad: BadRecord) -> tuple[str, str, str, int]:
    return bad.reason, bad.message, bad.source, bad.position


# ----------------------------------------------------------------------------- writing
def result_columns(labels: Sequence[str]) -> list[str]:
    """The result columns of a Parquet output row (after the --keep ones), for a model's labels."""
    return ["label", "score", *(f"score_{label}" for label in labels), "model", "cache_hit", "error"]


def keep_types(inputs: Sequence[str], keep: Sequence[str]) -> dict[str, Any]:
    """The Arrow type of each --keep column, from the first Parquet input that has it (others: inferred)."""
    types: dict[str, Any] = {}
    for name in inputs:
        if name != "-" and name.lower().endswith(SUFFIXES) and os.path.isfile(name):
            schema = schema_of(name)
            for k in keep:
                if k not in types and k in schema.names:
                    types[k] = schema.field(k).type
    return types


def result_table(
    kept: dict[str, list[Any]],
    keep_types: dict[str, Any],
    labels: Sequence[str],
    outcomes: Sequence[dict[str, Any] | BadRecord],
    model: str,
) -> Any:
    """An Arrow table of result rows: the --keep columns, then result_columns(labels)."""
    import pyarrow as pa

    arrays: dict[str, Any] = {}
    for name, values in kept.items():
        kind = keep_types.get(name)
        if kind is None and all(v is None for v in values):
            kind = pa.string()  # nothing to infer from: a later chunk's strings must still fit
        arrays[name] = pa.array(values, type=kind)
    ok = [o if not isinstance(o, BadRecord) else None for o in outcomes]
    arrays["label"] = pa.array([o["label"] if o else None for o in ok], type=pa.string())
    arrays["score"] = pa.array([float(o["score"]) if o else None for o in ok], type=pa.float64())
    for label in labels:
        arrays[f"score_{label}"] = pa.array([float(o["scores"][label]) if o else None for o in ok], type=pa.float64())
    arrays["model"] = pa.array([o["model"] if o else model for o in ok], type=pa.string())
    arrays["cache_hit"] = pa.array([bool(o["cache_hit"]) if o else None for o in ok], type=pa.bool_())
    arrays["error"] = pa.array([o.reason if isinstance(o, BadRecord) else None for o in outcomes], type=pa.string())
    return pa.table(arrays)


class ParquetWriter:
    """Result rows to a Parquet file, one row group per chunk of results; ``all_rows``: bad rows are rows too."""

    all_rows = True

    def __init__(
        self,
        stream: IO[bytes],
        what: str,
        labels: Sequence[str],
        model: str,
        keep: Sequence[str] = (),
        keep_types: dict[str, Any] | None = None,
    ):
        require_pyarrow()
        self.stream, self.what = stream, what
        self.labels, self.model, self.keep = list(labels), model, list(keep)
        self.keep_types = dict(keep_types or {})
        self.writer: Any = None

    def write_rows(self, kept: dict[str, list[Any]], outcomes: Sequence[dict[str, Any] | BadRecord]) -> None:
        """Append rows: kept[name] holds each row's --keep value, outcomes each row's result or BadRecord."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = result_table(kept, self.keep_types, self.labels, outcomes, self.model)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OutputError(
                f"cannot write {self.what}: a --keep value does not fit its column's type ({exc})"
            ) from None
        try:
            if self.writer is None:
                # The first chunk fixes the schema; an inferred --keep type (a JSON input) is kept from then on.
                self.keep_types.update({k: table.schema.field(k).type for k in self.keep})
                self.writer = pq.ParquetWriter(self.stream, table.schema, compression="zstd")
            self.writer.write_table(table)
        except OSError as exc:
            raise OutputError(f"cannot write {self.what}: {exc.strerror or exc}") from None

    def write_table(self, table: Any) -> None:
        """Append an Arrow table that already has the output's columns (score --ray's finished blocks)."""
        import pyarrow.parquet as pq

        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.stream, table.schema, compression="zstd")
            self.writer.write_table(table.cast(self.writer.schema))
        except OSError as exc:
            raise OutputError(f"cannot write {self.what}: {exc.strerror or exc}") from None

    def abandon(self) -> None:
        """After a failure: end the file quietly (what was written stays written, as with JSON lines)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, ValueError):
                pass
            self.writer = None

    def close(self) -> None:
        """Write the footer (an empty input still makes a valid file with the result columns)."""
        if self.writer is None:
            self.write_rows({k: [] for k in self.keep}, [])
        try:
            self.writer.close()
        except OSError as exc:
            raise OutputError(f"cannot write {self.what}: {exc.strerror or exc}") from None
