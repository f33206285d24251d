"""Bytes to lines for score's readers: the encoding a file is in, and lines read with a bound.

A byte-order mark (or the NUL pattern of UTF-16/32 text) tells the encoding; every line is read at
most a bound at a time, so an over-long line (``score /dev/zero``, a 1 GB line) never grows memory.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, AnyStr

from .engine.records import INVALID_ENCODING, BadRecord, record_bound, too_long_record

if TYPE_CHECKING:
    from typing_extensions import Buffer

# Byte-order marks, longest first: a UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# The NUL pattern of a file's first four bytes (True: a NUL) that tells UTF-16/32 without a mark.
_NUL_PATTERNS = {
    (True, True, True, False): "utf-32-be",
    (False, True, True, True): "utf-32-le",
    (True, False, True, False): "utf-16-be",
    (False, True, False, True): "utf-16-le",
}
# How much of a UTF-16/32 file must decode cleanly before it is read as one.
SNIFF_BYTES = 64 * 1024
# Undecodable bytes in a UTF-16/32 file become this lone surrogate, which no valid decoded text can
# contain: the line that holds it is reported, the rest of the file is read on.
MARK = "\udfff"
MARK_HANDLER = "sentictl-mark"
# How much of an over-long record is skipped per read: the rest of it is never held.
SKIP = 1 << 16


def _mark(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, (UnicodeDecodeError, UnicodeEncodeError, UnicodeTranslateError)):
        return MARK, exc.end
    raise exc


codecs.register_error(MARK_HANDLER, _mark)


class Prepend(io.RawIOBase):
    """A stream that yields ``head`` first, then the rest of ``stream`` (for a pipe that cannot seek back)."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        with memoryview(buffer) as view:
            if self.head:
                n = min(len(view), len(self.head))
                view[:n], self.head = self.head[:n], self.head[n:]
                return n
            data = self.stream.read1(len(view)) if hasattr(self.stream, "read1") else self.stream.read(len(view))
            view[: len(data)] = data
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
        guess = _NUL_PATTERNS.get((head[0] == 0, head[1] == 0, head[2] == 0, head[3] == 0))
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
    head = read_up_to(stream, b"", 4)
    encoding, skip, declared = _unicode_encoding(head)
    if encoding != "utf-8":
        head = read_up_to(stream, head, SNIFF_BYTES)
        body = head[skip:]
        decoder = codecs.getincrementaldecoder(encoding)(MARK_HANDLER if declared else "strict")
        try:
            text = decoder.decode(body, final=len(head) < SNIFF_BYTES)
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
    return io.BufferedReader(Prepend(head[skip:], stream)), encoding


def read_up_to(stream: IO[bytes], head: bytes, size: int) -> bytes:
    """``head`` plus what the stream gives until ``size`` bytes or its end."""
    read = getattr(stream, "read1", stream.read)
    while len(head) < size:
        chunk = read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def text_lines(stream: IO[bytes], encoding: str) -> io.TextIOWrapper:
    # newline="\n": a line ends at LF alone, as it does for the UTF-8 byte readers.
    return io.TextIOWrapper(stream, encoding=encoding, errors=MARK_HANDLER, newline="\n")


def detach(text_stream: io.TextIOWrapper) -> None:
    # The caller owns the byte stream (stdin stays open); the wrapper must not close it.
    try:
        text_stream.detach()
    except ValueError:
        pass


def bounded(
    readline: Callable[[int], AnyStr], limit: int, newline: AnyStr | tuple[AnyStr, ...]
) -> Iterator[tuple[int, AnyStr | None]]:
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
            line = readline(SKIP)
            if not line:
                return


def lines(
    stream: IO[bytes], source: str, encoding: str, max_chars: int, json: bool = False
) -> Iterator[tuple[int, bytes | BadRecord]]:
    """(line number, UTF-8 bytes of the line, or its verdict: invalid_encoding, too_long) for any encoding."""
    limit = record_bound(max_chars, json=json)
    if encoding == "utf-8":
        for n, raw in bounded(stream.readline, limit, b"\n"):
            yield n, raw if raw is not None else too_long_record(limit, max_chars, source, n)
        return
    text = text_lines(stream, encoding)
    try:
        for n, line in bounded(text.readline, limit, "\n"):
            if line is None:
                yield n, too_long_record(limit, max_chars, source, n)
            elif MARK in line:
                yield n, BadRecord(INVALID_ENCODING, f"invalid {encoding.upper()}", source, n)
            else:
                yield n, line.encode("utf-8")
    finally:
        detach(text)
