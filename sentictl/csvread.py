"""score's CSV and TSV reader: a header row, the text in one column, every line read with a bound.

Like every reader it never raises on a bad row: it yields the engine's verdict (a Record, or a
BadRecord with its reason code and line number) and goes on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from .engine.records import INVALID_ENCODING, BadRecord, Verdict, check_text, record_bound
from .errors import InputError
from .textlines import MARK_HANDLER, bounded, detach

if TYPE_CHECKING:
    from _csv import Reader


class _CsvLines:
    """Physical lines for csv.reader, each at most ``limit`` characters.

    An over-long line is skipped (never held) and stands in as an empty line, with ``overlong``
    set, so the row it belongs to is reported as too_long. ``exhausted``: the lines ran out, so a
    row the reader returns after that ended inside a quoted field (csv.reader otherwise accepts
    an unterminated quote at end of file).
    """

    def __init__(self, text_stream: io.TextIOWrapper, limit: int):
        self.lines = bounded(text_stream.readline, limit, ("\n", "\r"))
        self.exhausted = False
        self.overlong = False

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        try:
            _, line = next(self.lines)
        except StopIteration:
            self.exhausted = True
            raise
        if line is None:
            self.overlong = True
            return "\n"
        return line

    def take_overlong(self) -> bool:
        """Whether a line of the row just read was over the limit (and forget it)."""
        overlong, self.overlong = self.overlong, False
        return overlong


@dataclass
class _Table:
    """One CSV/TSV input being read: where it comes from and what its rows are checked against."""

    source: str
    column: str
    max_chars: int
    delimiter: str
    lines: _CsvLines
    bad_bytes: tuple[str, str]  # the reason and message of a value with undecodable bytes

    @property
    def kind(self) -> str:
        return "TSV" if self.delimiter == "\t" else "CSV"

    @property
    def limit(self) -> int:
        return record_bound(self.max_chars)


def read_csv(
    stream: IO[bytes],
    source: str,
    column: str,
    max_chars: int,
    encoding: str = "utf-8",
    delimiter: str = ",",
    keep: bool = False,
) -> Iterator[Verdict]:
    """A CSV (or, with delimiter "\\t", TSV) file with a header row; the text is in ``column``.

    keep: each Record carries its row as {column: value} (for --keep).
    """
    # surrogateescape keeps a UTF-8 file readable past a bad byte; the row that holds it is reported.
    utf8 = encoding == "utf-8"
    text_stream = io.TextIOWrapper(
        stream, encoding=encoding, errors="surrogateescape" if utf8 else MARK_HANDLER, newline=""
    )
    limit = record_bound(max_chars)
    bad_bytes = ("invalid_utf8", "invalid UTF-8") if utf8 else (INVALID_ENCODING, f"invalid {encoding.upper()}")
    table = _Table(source, column, max_chars, delimiter, _CsvLines(text_stream, limit), bad_bytes)
    # A quoted field may span lines: it is bounded as a line is (csv's limit is process-wide).
    csv.field_size_limit(limit)
    reader = csv.reader(table.lines, delimiter=delimiter)
    try:
        header = _header(table, reader)
        if isinstance(header, BadRecord):
            yield header
        elif header is not None:
            yield from _rows(table, reader, header, keep)
    finally:
        detach(text_stream)


def _header(table: _Table, reader: Reader) -> list[str] | BadRecord | None:
    """The header row (None for an empty file, a bad_csv verdict for a broken one); InputError when it
    is over the bound or lacks the text column."""
    kind = table.kind
    try:
        header = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        return BadRecord("bad_csv", f"bad {kind} header: {exc}", table.source, 1)
    if table.lines.take_overlong():
        raise InputError(
            f"{table.source}: the {kind} header is over {table.limit:,} characters: is this a {kind} file?"
        )
    if table.column not in header:
        hint = ""
        if table.delimiter == "," and len(header) == 1 and "\t" in header[0]:
            hint = " (the header holds tabs: is it TSV? use --format tsv)"
        raise InputError(
            f"{table.source}: no column {table.column!r} in the {kind} header (columns: {', '.join(header)}){hint}; "
            f"use --column"
        )
    return header


def _rows(table: _Table, reader: Reader, header: list[str], keep: bool) -> Iterator[Verdict]:
    """The verdict for every row after the header, numbered by the line it starts on."""
    source, kind, lines = table.source, table.kind, table.lines
    index = header.index(table.column)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines.take_overlong()
            yield BadRecord("bad_csv", f"bad {kind}: {exc}", source, start)
            continue
        if lines.take_overlong():
            yield BadRecord(
                "too_long",
                f"a line of the row is over {table.limit:,} characters, more than --max-chars "
                f"{table.max_chars:,} can take; skipped",
                source,
                start,
            )
            continue
        if lines.exhausted:
            yield BadRecord(
                "bad_csv",
                f"bad {kind}: the file ends inside the quoted field that starts on line {start}",
                source,
                start,
            )
            return
        yield _cell(table, row, index, start, header if keep else None)


def _cell(table: _Table, row: list[str], index: int, start: int, header: list[str] | None) -> Verdict:
    """The verdict for the text cell of a complete row (``header``: carry the row, for --keep)."""
    if not row:
        return BadRecord("empty", "empty row: nothing to classify", table.source, start)
    if index >= len(row):
        return BadRecord("missing_field", f"row has no {table.column!r} column", table.source, start)
    value = row[index]
    if _has_surrogate(value):
        return BadRecord(*table.bad_bytes, table.source, start)
    data = dict(zip(header, row)) if header is not None else None
    return check_text(value, table.max_chars, table.source, start, data=data)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
