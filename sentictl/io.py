"""score's readers: plain lines, a JSONL field, a CSV or TSV column, a JSON array (writers live in ``outputs``).

Readers never raise on a bad record: they yield the engine's verdict (a Record, or a BadRecord
with its reason code and line number) and go on, so one broken line cannot stop (or lose) the
rest of a stream.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .engine.records import (
    INVALID_ENCODING,
    BadRecord,
    Verdict,
    check_text,
    field_text,
    from_bytes,
)
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

FORMATS = ("txt", "jsonl", "csv", "tsv", "json")
_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
               ".tab": "tsv"}


def detect_format(name: str, given: str | None) -> str:
    """--format if given, else by file extension, else plain lines."""
    if given:
        return given
    return _EXTENSIONS.get(Path(name).suffix.lower(), "txt")


# Byte-order marks, longest first: a UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# How much of a UTF-16/32 file must decode cleanly before it is read as one.
_SNIFF_BYTES = 64 * 1024
# Undecodable bytes in a UTF-16/32 file become this lone surrogate, which no valid decoded text can
# contain: the line that holds it is reported, the rest of the file is read on.
_MARK = "\udfff"
_MARK_HANDLER = "sentictl-mark"
codecs.register_error(_MARK_HANDLER, lambda exc: (_MARK, exc.end))


class _Prepend(io.RawIOBase):
    """A stream that yields ``head`` first, then the rest of ``stream`` (for a pipe that cannot seek back)."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read1(len(buffer)) if hasattr(self.stream, "read1") else self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _unicode_encoding(head: bytes) -> tuple[str, int, bool]:
    """(encoding, length of its byte-order mark, declared by a mark) for ``head``, a file's first bytes.

    A byte-order mark declares the encoding; without one, the pattern of NUL bytes among the first
    four tells UTF-16 and UTF-32 from UTF-8 the way RFC 4627 (section 3) detects JSON's encoding:
    no UTF-8 text starts with NULs.
    """
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom), True
    if len(head) >= 4:
        nul = tuple(b == 0 for b in head[:4])
        guess = {(True, True, True, False): "utf-32-be", (False, True, True, True): "utf-32-le",
                 (True, False, True, False): "utf-16-be", (False, True, False, True): "utf-16-le"}.get(nul)
        if guess:
            return guess, 0, False
    return "utf-8", 0, False


def sniff_encoding(stream: IO[bytes]) -> tuple[IO[bytes], str]:
    """The stream past any byte-order mark, and the encoding to read it in (utf-8, utf-16-le, ...).

    A UTF-16 or UTF-32 byte-order mark is believed when the line feeds that follow it decode as
    line feeds (a corrupt character then spoils only its own line); a NUL pattern without a mark
    only when the start of the file decodes cleanly. Otherwise the bytes are read as UTF-8, as
    always, and a line that is not UTF-8 is reported as invalid_utf8, never decoded into garbage.
    """
    # Four bytes tell the encoding; more are read only to confirm a UTF-16/32 one.
    head = _read_up_to(stream, b"", 4)
    encoding, skip, declared = _unicode_encoding(head)
    if encoding != "utf-8":
        head = _read_up_to(stream, head, _SNIFF_BYTES)
        body = head[skip:]
        decoder = codecs.getincrementaldecoder(encoding)(_MARK_HANDLER if declared else "strict")
        try:
            text = decoder.decode(body, final=len(head) < _SNIFF_BYTES)
        except UnicodeDecodeError:
            text = None
        # LF bytes that decode to no line feed sit at odd places: single-byte lines behind a
        # stray mark (ASCII read as UTF-16 decodes into CJK characters), not UTF-16/32 ones.
        if text is None or (b"\n" in body and "\n" not in text):
            encoding, skip = "utf-8", 0
    try:
        if stream.seekable():
            stream.seek(skip - len(head), io.SEEK_CUR)
            return stream, encoding
    except (OSError, ValueError):
        pass
    return io.BufferedReader(_Prepend(head[skip:], stream)), encoding


def _read_up_to(stream: IO[bytes], head: bytes, size: int) -> bytes:
    """``head`` plus what the stream gives until ``size`` bytes or its end."""
    read = getattr(stream, "read1", stream.read)
    while len(head) < size:
        chunk = read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _text_lines(stream: IO[bytes], encoding: str, newline: str | None = "\n") -> io.TextIOWrapper:
    # newline="\n": a line ends at LF alone, as it does for the UTF-8 byte readers.
    return io.TextIOWrapper(stream, encoding=encoding, errors=_MARK_HANDLER, newline=newline)


def _detach(text_stream: io.TextIOWrapper) -> None:
    # The caller owns the byte stream (stdin stays open); the wrapper must not close it.
    try:
        text_stream.detach()
    except ValueError:
        pass


def _lines(stream: IO[bytes], source: str, encoding: str) -> Iterator[tuple[int, bytes | BadRecord]]:
    """(line number, UTF-8 bytes of the line, or its invalid_encoding verdict) for any encoding."""
    if encoding == "utf-8":
        yield from enumerate(stream, 1)
        return
    text = _text_lines(stream, encoding)
    try:
        for n, line in enumerate(text, 1):
            if _MARK in line:
                yield n, BadRecord(INVALID_ENCODING, f"invalid {encoding.upper()}", source, n)
            else:
                yield n, line.encode("utf-8")
    finally:
        _detach(text)


def read_lines(stream: IO[bytes], source: str, max_chars: int, encoding: str = "utf-8") -> Iterator[Verdict]:
    """One text per line."""
    for n, raw in _lines(stream, source, encoding):
        yield raw if isinstance(raw, BadRecord) else from_bytes(raw, max_chars, source=source, position=n)


def read_jsonl(stream: IO[bytes], source: str, field: str, max_chars: int, encoding: str = "utf-8") -> Iterator[Verdict]:
    """One JSON object per line; the text is in ``field`` (dots reach into nested objects)."""
    for n, raw in _lines(stream, source, encoding):
        yield raw if isinstance(raw, BadRecord) else from_bytes(raw, max_chars, json_field=field, source=source,
                                                                position=n)


class _Tracked:
    """Lines for csv.reader that remember running out: a row the reader returns after that ended
    inside a quoted field (csv.reader otherwise accepts an unterminated quote at end of file)."""

    def __init__(self, lines: Iterator[str]):
        self.lines, self.exhausted = lines, False

    def __iter__(self) -> _Tracked:
        return self

    def __next__(self) -> str:
        try:
            return next(self.lines)
        except StopIteration:
            self.exhausted = True
            raise


def read_csv(stream: IO[bytes], source: str, column: str, max_chars: int, encoding: str = "utf-8",
             delimiter: str = ",") -> Iterator[Verdict]:
    """A CSV (or, with delimiter "\\t", TSV) file with a header row; the text is in ``column``."""
    # surrogateescape keeps a UTF-8 file readable past a bad byte; the row that holds it is reported.
    utf8 = encoding == "utf-8"
    text_stream = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape" if utf8 else _MARK_HANDLER,
                                   newline="")
    lines = _Tracked(text_stream)
    reader = csv.reader(lines, delimiter=delimiter)
    kind = "TSV" if delimiter == "\t" else "CSV"
    bad_bytes = ("invalid_utf8", "invalid UTF-8") if utf8 else (INVALID_ENCODING, f"invalid {encoding.upper()}")
    try:
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord("bad_csv", f"bad {kind} header: {exc}", source, 1)
            return
        if column not in header:
            hint = ""
            if delimiter == "," and len(header) == 1 and "\t" in header[0]:
                hint = " (the header holds tabs: is it TSV? use --format tsv)"
            raise InputError(f"{source}: no column {column!r} in the {kind} header (columns: {', '.join(header)}){hint}; "
                             f"use --column")
        index = header.index(column)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRecord("bad_csv", f"bad {kind}: {exc}", source, start)
                continue
            if lines.exhausted:
                yield BadRecord("bad_csv", f"bad {kind}: the file ends inside the quoted field that starts on line "
                                           f"{start}", source, start)
                return
            if not row:
                yield BadRecord("empty", "empty row: nothing to classify", source, start)
                continue
            if index >= len(row):
                yield BadRecord("missing_field", f"row has no {column!r} column", source, start)
                continue
            value = row[index]
            if _has_surrogate(value):
                yield BadRecord(*bad_bytes, source, start)
                continue
            yield check_text(value, max_chars, source, start)
    finally:
        _detach(text_stream)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_source(stream: IO[bytes], source: str, fmt: str, field: str, column: str, max_chars: int) -> Iterator[Verdict]:
    """Dispatch on format: every reader gives the engine's verdicts (records.py decides them).

    A byte-order mark is removed, and a UTF-16 or UTF-32 file is read as the text it holds.
    """
    stream, encoding = sniff_encoding(stream)
    if fmt == "json":
        # A .json file holds an array, or (as many tools write them) JSON lines: the first byte tells.
        stream, first = _peek_first(stream, encoding)
        if first == "[":
            return read_json_array(stream, source, field, max_chars, encoding)
        fmt = "jsonl"
    if fmt == "jsonl":
        return read_jsonl(stream, source, field, max_chars, encoding)
    if fmt in ("csv", "tsv"):
        return read_csv(stream, source, column, max_chars, encoding, delimiter="\t" if fmt == "tsv" else ",")
    return read_lines(stream, source, max_chars, encoding)


def _peek_first(stream: IO[bytes], encoding: str) -> tuple[IO[bytes], str]:
    """The stream as it was (what was read is put back), and its first character that is not white space."""
    read = getattr(stream, "read1", stream.read)
    head = b""
    while len(head) < _SNIFF_BYTES:
        chunk = read(4096)
        if not chunk:
            break
        head += chunk
        text = head.decode(encoding, errors="ignore").lstrip(" \t\r\n")
        if text:
            return io.BufferedReader(_Prepend(head, stream)), text[0]
    return io.BufferedReader(_Prepend(head, stream)), ""


def read_json_array(stream: IO[bytes], source: str, field: str, max_chars: int,
                    encoding: str = "utf-8") -> Iterator[Verdict]:
    """A JSON array of strings, or of objects holding the text in ``field`` (dots reach nested fields).

    Parsed as a stream (ijson), so a large file is never held whole. A record's position is its
    item number, counting from 1. Broken JSON ends the file with one bad_json report naming the
    last good item: what came before it is scored.
    """
    import ijson

    if encoding != "utf-8":
        # Only read() is offered: ijson would take readinto() straight from the UTF-16/32 stream.
        recoder = codecs.EncodedFile(stream, data_encoding="utf-8", file_encoding=encoding)
        stream = type("Recoded", (), {"read": lambda self, size=-1: recoder.read(size)})()
    n = 0
    try:
        for n, item in enumerate(ijson.items(stream, "item", use_float=True), 1):
            if isinstance(item, str):
                yield check_text(item, max_chars, source, n)
            elif isinstance(item, dict):
                value = field_text(item, field, source, n)
                yield value if isinstance(value, BadRecord) else check_text(value, max_chars, source, n, data=item)
            else:
                yield BadRecord("not_string", f"item {n} is a JSON {type(item).__name__}, neither a string nor an "
                                              f"object with a {field!r} field", source, n)
    except ijson.JSONError as exc:
        yield BadRecord("bad_json", f"bad JSON after item {n}: {exc}; the rest of the file is not read", source, n + 1)
    except UnicodeDecodeError:
        yield BadRecord("invalid_utf8" if encoding == "utf-8" else INVALID_ENCODING,
                        f"invalid {encoding.upper()} after item {n}; the rest of the file is not read", source, n + 1)


def open_input(name: str) -> IO[bytes]:
    """A binary stream for a path, or stdin for '-'."""
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
