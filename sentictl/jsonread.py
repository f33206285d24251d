"""score's JSON array reader: streamed with ijson, and no string in it held past the record bound.

Like every reader it never raises on a bad item: it yields the engine's verdict (a Record, or a
BadRecord with its reason code and item number) and goes on; broken JSON ends the file with one report.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO, Any, Protocol

from .engine.records import INVALID_ENCODING, BadRecord, Verdict, check_text, field_text, record_bound, too_long_record
from .textlines import SKIP


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


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

    def __init__(self, stream: _Readable, limit: int):
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
            chunk = self.stream.read(size if size and size > 0 else SKIP)
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

    # ijson reads UTF-8: a UTF-16/32 stream is recoded as it is read.
    utf8: _Readable = stream if encoding == "utf-8" else codecs.EncodedFile(stream, "utf-8", encoding)
    limit = record_bound(max_chars, json=True)
    capped = _CappedStrings(utf8, limit)
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
