"""score's readers: plain lines, a JSONL field, a CSV or TSV column, a JSON array (writers live in ``outputs``).

Readers never raise on a bad record: they yield the engine's verdict (a Record, or a BadRecord
with its reason code and line number) and go on, so one broken line cannot stop (or lose) the
rest of a stream.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .engine.records import (
    INVALID_ENCODING,
    BadRecord,
    Verdict,
    check_text,
    field_text,
    from_bytes,
    record_bound,
    too_long_record,
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

FORMATS = ("txt", "jsonl", "csv", "tsv", "json", "parquet")
_EXTENSIONS = {
    ".txt": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".parq": "parquet",
}


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
        buffer[: len(data)] = data
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
        guess = {
            (True, True, True, False): "utf-32-be",
            (False, True, True, True): "utf-32-le",
            (True, False, True, False): "utf-16-be",
            (False, True, False, True): "utf-16-le",
        }.get(nul)
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


# How much of an over-long record is skipped per read: the rest of it is never held.
_SKIP = 1 << 16


def _bounded(readline, limit: int, newline) -> Iterator[tuple[int, Any]]:
    """(line number, line) for each line, or (line number, None) for a line over ``limit``.

    A line is read at most ``limit + 1`` units (bytes or characters) at a time; the rest of an
    over-long line is skipped in small reads, so `score /dev/zero` or a 1 GB line cannot grow
    memory. The None comes before the skipping, so the report is out even if the line never ends.
    """
    n = 0
    while True:
        line = readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) <= limit:
            yield n, line
            continue
        yield n, None
        while not line.endswith(newline):
            line = readline(_SKIP)
            if not line:
                return


def _lines(
    stream: IO[bytes], source: str, encoding: str, max_chars: int, json: bool = False
) -> Iterator[tuple[int, bytes | BadRecord]]:
    """(line number, UTF-8 bytes of the line, or its verdict: invalid_encoding, too_long) for any encoding."""
    limit = record_bound(max_chars, json=json)
    if encoding == "utf-8":
        for n, raw in _bounded(stream.readline, limit, b"\n"):
            yield n, raw if raw is not None else too_long_record(limit, max_chars, source, n)
        return
    text = _text_lines(stream, encoding)
    try:
        for n, line in _bounded(text.readline, limit, "\n"):
            if line is None:
                yield n, too_long_record(limit, max_chars, source, n)
            elif _MARK in line:
                yield n, BadRecord(INVALID_ENCODING, f"invalid {encoding.upper()}", source, n)
            else:
                yield n, line.encode("utf-8")
    finally:
        _detach(text)


def read_lines(stream: IO[bytes], source: str, max_chars: int, encoding: str = "utf-8") -> Iterator[Verdict]:
    """One text per line."""
    for n, raw in _lines(stream, source, encoding, max_chars):
        yield raw if isinstance(raw, BadRecord) else from_bytes(raw, max_chars, source=source, position=n)


def read_jsonl(
    stream: IO[bytes], source: str, field: str, max_chars: int, encoding: str = "utf-8"
) -> Iterator[Verdict]:
    """One JSON object per line; the text is in ``field`` (dots reach into nested objects)."""
    for n, raw in _lines(stream, source, encoding, max_chars, json=True):
        yield (
            raw
            if isinstance(raw, BadRecord)
            else from_bytes(raw, max_chars, json_field=field, source=source, position=n)
        )


class _CsvLines:
    """Physical lines for csv.reader, each at most ``limit`` characters.

    An over-long line is skipped (never held) and stands in as an empty line, with ``overlong``
    set, so the row it belongs to is reported as too_long. ``exhausted``: the lines ran out, so a
    row the reader returns after that ended inside a quoted field (csv.reader otherwise accepts
    an unterminated quote at end of file).
    """

    def __init__(self, text_stream: io.TextIOWrapper, limit: int):
        self.lines = _bounded(text_stream.readline, limit, ("\n", "\r"))
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
        stream, encoding=encoding, errors="surrogateescape" if utf8 else _MARK_HANDLER, newline=""
    )
    limit = record_bound(max_chars)
    lines = _CsvLines(text_stream, limit)
    # A quoted field may span lines: it is bounded as a line is (csv's limit is process-wide).
    csv.field_size_limit(limit)
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
        if lines.take_overlong():
            raise InputError(f"{source}: the {kind} header is over {limit:,} characters: is this a {kind} file?")
        if column not in header:
            hint = ""
            if delimiter == "," and len(header) == 1 and "\t" in header[0]:
                hint = " (the header holds tabs: is it TSV? use --format tsv)"
            raise InputError(
                f"{source}: no column {column!r} in the {kind} header (columns: {', '.join(header)}){hint}; "
                f"use --column"
            )
        index = header.index(column)
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
                    f"a line of the row is over {limit:,} characters, more than --max-chars "
                    f"{max_chars:,} can take; skipped",
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
            yield check_text(value, max_chars, source, start, data=dict(zip(header, row)) if keep else None)
    finally:
        _detach(text_stream)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_source(
    stream: IO[bytes],
    source: str,
    fmt: str,
    field: str,
    column: str,
    max_chars: int,
    keep: bool | Sequence[str] = False,
) -> Iterator[Verdict]:
    """Dispatch on format: every reader gives the engine's verdicts (records.py decides them).

    A byte-order mark is removed, and a UTF-16 or UTF-32 file is read as the text it holds.
    keep: CSV/TSV records carry their row (JSON records always carry their object); for Parquet,
    the names of the columns to carry (pyarrow, imported only for a Parquet input).
    """
    if fmt == "parquet":
        from .parquet import read_parquet

        return read_parquet(stream, source, column, max_chars, keep if isinstance(keep, (list, tuple)) else ())
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
        return read_csv(
            stream, source, column, max_chars, encoding, delimiter="\t" if fmt == "tsv" else ",", keep=bool(keep)
        )
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


# Ends a JSON string that _CappedStrings cut short: a noncharacter, which real texts do not hold.
_CUT = "\uffff"
_CUT_BYTES = b"\\uffff"
_STRING_STOPS = re.compile(rb'["\\]')


class _CappedStrings:
    """A UTF-8 JSON byte stream in which no string holds more than ``limit`` bytes.

    ijson holds a whole string before it hands it over, so a 1 GB string in an array would be
    held whole. Here a string that grows past the limit is cut (at a character boundary, never
    inside an escape or a surrogate pair), its rest skipped as it streams by, and ``\\uffff``
    appended so the record can be recognised and reported as too_long. Everything else passes
    through untouched; the scan jumps between quotes and backslashes at C speed.
    """

    def __init__(self, stream: Any, limit: int):
        self.stream, self.limit = stream, limit
        self.in_string = False
        self.dropping = False
        self.kept = 0  # bytes of the current string passed through
        self.held = b""  # an escape split by a read boundary, completed by the next read
        self.after_high = False  # the last unit passed was a high-surrogate escape: no cut here
        self.cuts = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn whether the stream gives bytes
            return b""
        while True:
            chunk = self.stream.read(size if size and size > 0 else _SKIP)
            if not chunk:
                rest, self.held = self.held, b""
                return rest
            out = self._scan(self.held + chunk)
            if out:
                return out

    def _scan(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, end = 0, len(data)
        self.held = b""
        while pos < end:
            if not self.in_string:
                q = data.find(b'"', pos)
                if q < 0:
                    out.append(data[pos:])
                    break
                out.append(data[pos : q + 1])
                pos = q + 1
                self.in_string, self.dropping, self.kept, self.after_high = True, False, 0, False
                continue
            m = _STRING_STOPS.search(data, pos)
            stop = m.start() if m else end
            if stop > pos:  # plain UTF-8 bytes
                pos = self._plain(data, pos, stop, out)
            if stop == end:
                break
            if data[stop] == 0x22:  # the closing quote
                if self.dropping:
                    out.append(_CUT_BYTES)
                out.append(b'"')
                self.in_string = False
                pos = stop + 1
                continue
            width = 6 if data[stop + 1 : stop + 2] == b"u" else 2
            if stop + width > end:  # an escape split by the read: finish it with the next one
                self.held = data[stop:]
                break
            escape = data[stop : stop + width]
            if not self.dropping and self.kept + width > self.limit and not self.after_high:
                self._start_dropping()
            if not self.dropping:
                out.append(escape)
                self.kept += width
                self.after_high = width == 6 and escape[2:4].lower() in (b"d8", b"d9", b"da", b"db")
            pos = stop + width
        return b"".join(out)

    def _plain(self, data: bytes, pos: int, stop: int, out: list[bytes]) -> int:
        if self.dropping:
            return stop
        room = self.limit - self.kept
        if stop - pos <= room:
            out.append(data[pos:stop])
            self.kept += stop - pos
            self.after_high = False
            return stop
        cut = pos + max(room, 0)
        if self.after_high and cut == pos:
            cut += 1  # never between the halves of a surrogate pair
        while cut < stop and data[cut] & 0xC0 == 0x80:  # never inside a character
            cut += 1
        out.append(data[pos:cut])
        self.kept += cut - pos
        if cut < stop:
            self.after_high = False
            self._start_dropping()
        return stop if self.dropping else cut

    def _start_dropping(self) -> None:
        self.dropping = True
        self.cuts += 1


def _holds_cut(value: Any) -> bool:
    """Whether a parsed JSON value holds a string _CappedStrings cut short."""
    if isinstance(value, str):
        return value.endswith(_CUT)
    if isinstance(value, dict):
        return any(_holds_cut(k) or _holds_cut(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_cut(v) for v in value)
    return False


def read_json_array(
    stream: IO[bytes], source: str, field: str, max_chars: int, encoding: str = "utf-8"
) -> Iterator[Verdict]:
    """A JSON array of strings, or of objects holding the text in ``field`` (dots reach nested fields).

    Parsed as a stream (ijson), so a large file is never held whole, and no string in it is held
    past the record bound either (a longer one makes its item too_long). A record's position is
    its item number, counting from 1. Broken JSON ends the file with one bad_json report naming
    the last good item: what came before it is scored.
    """
    import ijson

    source_stream: Any = stream
    if encoding != "utf-8":
        # Only read() is offered: ijson would take readinto() straight from the UTF-16/32 stream.
        recoder = codecs.EncodedFile(stream, data_encoding="utf-8", file_encoding=encoding)
        source_stream = type("Recoded", (), {"read": lambda self, size=-1: recoder.read(size)})()
    limit = record_bound(max_chars, json=True)
    capped = _CappedStrings(source_stream, limit)
    n = reported = 0
    try:
        for n, item in enumerate(ijson.items(capped, "item", use_float=True), 1):
            if reported < capped.cuts and _holds_cut(item):
                reported += 1
                yield too_long_record(limit, max_chars, source, n, what=f"a string in item {n}")
            elif isinstance(item, str):
                yield check_text(item, max_chars, source, n)
            elif isinstance(item, dict):
                value = field_text(item, field, source, n)
                yield value if isinstance(value, BadRecord) else check_text(value, max_chars, source, n, data=item)
            else:
                yield BadRecord(
                    "not_string",
                    f"item {n} is a JSON {type(item).__name__}, neither a string nor an object with a {field!r} field",
                    source,
                    n,
                )
    except ijson.JSONError as exc:
        yield BadRecord("bad_json", f"bad JSON after item {n}: {exc}; the rest of the file is not read", source, n + 1)
    except UnicodeDecodeError:
        yield BadRecord(
            "invalid_utf8" if encoding == "utf-8" else INVALID_ENCODING,
            f"invalid {encoding.upper()} after item {n}; the rest of the file is not read",
            source,
            n + 1,
        )


def check_inputs(names: Sequence[str]) -> None:
    """Before any work: every named input exists, is no directory and can be read (InputError, exit 1)."""
    for name in names:
        if name == "-":
            continue
        try:
            st = os.stat(name)
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot read {name}: Is a directory")
        if not os.access(name, os.R_OK):
            raise InputError(f"cannot read {name}: Permission denied")


def open_input(name: str) -> IO[bytes]:
    """A binary stream for a path, or stdin for '-'."""
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
