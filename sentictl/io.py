"""Readers (plain lines, a JSONL field, a CSV column) and writers (JSON lines, CSV).

Readers never raise on a bad record: they yield a :class:`BadRecord` with its line number and
go on, so one broken line cannot stop (or lose) the rest of a stream.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import orjson

from .errors import InputError

FORMATS = ("txt", "jsonl", "csv")
_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


@dataclass(frozen=True)
class Record:
    """One text to classify, with where it came from."""

    source: str
    line: int
    text: str


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read; reported, never fatal."""

    source: str
    line: int
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "error": self.error}


@dataclass(frozen=True)
class Blank:
    """A blank line or empty text: skipped and counted."""

    source: str
    line: int


def detect_format(name: str, given: str | None) -> str:
    """--format if given, else by file extension, else plain lines."""
    if given:
        return given
    return _EXTENSIONS.get(Path(name).suffix.lower(), "txt")


def _check(source: str, line: int, text: str, max_chars: int) -> Record | BadRecord | Blank:
    if not text.strip():
        return Blank(source, line)
    if len(text) > max_chars:
        return BadRecord(source, line, f"text is {len(text):,} characters, over the limit of {max_chars:,} (--max-chars)")
    return Record(source, line, text)


def _decode_line(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_lines(stream: IO[bytes], source: str, max_chars: int) -> Iterator[Record | BadRecord | Blank]:
    """One text per line."""
    for n, raw in enumerate(stream, 1):
        text = _decode_line(raw)
        if text is None:
            yield BadRecord(source, n, "invalid UTF-8")
            continue
        yield _check(source, n, text.rstrip("\r\n"), max_chars)


def read_jsonl(stream: IO[bytes], source: str, field: str, max_chars: int) -> Iterator[Record | BadRecord | Blank]:
    """One JSON object per line; the text is in ``field`` (dots reach into nested objects)."""
    path = field.split(".")
    for n, raw in enumerate(stream, 1):
        if not raw.strip():
            yield Blank(source, n)
            continue
        if _decode_line(raw) is None:
            yield BadRecord(source, n, "invalid UTF-8")
            continue
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield BadRecord(source, n, f"bad JSON: {exc}")
            continue
        for part in path:
            if not isinstance(value, dict) or part not in value:
                value = None
                break
            value = value[part]
        if value is None:
            yield BadRecord(source, n, f"missing field {field!r}")
        elif not isinstance(value, str):
            yield BadRecord(source, n, f"field {field!r} is not a string")
        else:
            yield _check(source, n, value, max_chars)


def read_csv(stream: IO[bytes], source: str, column: str, max_chars: int) -> Iterator[Record | BadRecord | Blank]:
    """A CSV file with a header row; the text is in ``column``."""
    # surrogateescape keeps the file readable past a bad byte; the row that holds it is reported.
    text_stream = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text_stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield BadRecord(source, 1, f"bad CSV header: {exc}")
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
            yield BadRecord(source, start, f"bad CSV: {exc}")
            continue
        if not row:
            yield Blank(source, start)
            continue
        if index >= len(row):
            yield BadRecord(source, start, f"row has no {column!r} column")
            continue
        value = row[index]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield BadRecord(source, start, "invalid UTF-8")
            continue
        yield _check(source, start, value, max_chars)


def read_source(
    stream: IO[bytes], source: str, fmt: str, field: str, column: str, max_chars: int
) -> Iterator[Record | BadRecord | Blank]:
    """Dispatch on format."""
    if fmt == "jsonl":
        return read_jsonl(stream, source, field, max_chars)
    if fmt == "csv":
        return read_csv(stream, source, column, max_chars)
    return read_lines(stream, source, max_chars)


class JsonlWriter:
    """JSON lines on a binary stream."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream

    def write(self, results: Sequence[dict[str, Any]]) -> None:
        self.stream.write(b"".join(orjson.dumps(r) + b"\n" for r in results))
        self.stream.flush()


class CsvWriter:
    """CSV with one probability column per label; the header comes from the first result."""

    def __init__(self, stream: IO[bytes]):
        self.text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
        self.writer = csv.writer(self.text)
        self.labels: list[str] | None = None

    def write(self, results: Sequence[dict[str, Any]]) -> None:
        for r in results:
            if self.labels is None:
                self.labels = list(r["scores"])
                self.writer.writerow(["text", "label", "score", *self.labels, "model", "cache_hit", "truncated"])
            self.writer.writerow(
                [r["text"], r["label"], r["score"], *(r["scores"][k] for k in self.labels), r["model"],
                 str(r["cache_hit"]).lower(), str(r.get("truncated", False)).lower()]
            )
        self.text.flush()


def open_input(name: str) -> IO[bytes]:
    """A binary stream for a path, or stdin for '-'."""
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
