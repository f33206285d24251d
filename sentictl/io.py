"""score's readers: plain lines, a JSONL field, a CSV column (writers live in ``outputs``).

Readers never raise on a bad record: they yield the engine's verdict (a Record, or a BadRecord
with its reason code and line number) and go on, so one broken line cannot stop (or lose) the
rest of a stream.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import IO, Iterator

from .engine.records import BadRecord, Verdict, check_text, from_bytes
from .errors import InputError

# Writers and output safety lived here before outputs.py; kept importable from here.
from .outputs import (  # noqa: F401
    CsvWriter,
    JsonlWriter,
    OutputStream,
    check_output_path,
    check_stdout,
    close_output,
    flush_stdout,
    input_identities,
    open_output,
    output_failed,
    silence_stdout,
    writing_stdout,
)

FORMATS = ("txt", "jsonl", "csv")
_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


def detect_format(name: str, given: str | None) -> str:
    """--format if given, else by file extension, else plain lines."""
    if given:
        return given
    return _EXTENSIONS.get(Path(name).suffix.lower(), "txt")


def read_lines(stream: IO[bytes], source: str, max_chars: int) -> Iterator[Verdict]:
    """One text per line."""
    for n, raw in enumerate(stream, 1):
        yield from_bytes(raw, max_chars, source=source, position=n)


def read_jsonl(stream: IO[bytes], source: str, field: str, max_chars: int) -> Iterator[Verdict]:
    """One JSON object per line; the text is in ``field`` (dots reach into nested objects)."""
    for n, raw in enumerate(stream, 1):
        yield from_bytes(raw, max_chars, json_field=field, source=source, position=n)


def read_csv(stream: IO[bytes], source: str, column: str, max_chars: int) -> Iterator[Verdict]:
    """A CSV file with a header row; the text is in ``column``."""
    # surrogateescape keeps the file readable past a bad byte; the row that holds it is reported.
    text_stream = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text_stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield BadRecord("bad_csv", f"bad CSV header: {exc}", source, 1)
        return
    if column not in header:
        raise InputError(f"{source}: no column {column!r} in the CSV header (columns: {', '.join(header)}); use --column")
    index = header.index(column)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord("bad_csv", f"bad CSV: {exc}", source, start)
            continue
        if not row:
            yield BadRecord("empty", "empty row: nothing to classify", source, start)
            continue
        if index >= len(row):
            yield BadRecord("missing_field", f"row has no {column!r} column", source, start)
            continue
        value = row[index]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield BadRecord("invalid_utf8", "invalid UTF-8", source, start)
            continue
        yield check_text(value, max_chars, source, start)


def read_source(stream: IO[bytes], source: str, fmt: str, field: str, column: str, max_chars: int) -> Iterator[Verdict]:
    """Dispatch on format: every reader gives the engine's verdicts (records.py decides them)."""
    if fmt == "jsonl":
        return read_jsonl(stream, source, field, max_chars)
    if fmt == "csv":
        return read_csv(stream, source, column, max_chars)
    return read_lines(stream, source, max_chars)


def open_input(name: str) -> IO[bytes]:
    """A binary stream for a path, or stdin for '-'."""
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
