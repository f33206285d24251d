"""score's inputs: which format a name is read as, the plain-line and JSON-lines readers, and the
dispatch to every reader (CSV/TSV in ``csvread``, JSON arrays in ``jsonread``, Parquet in ``parquet``;
writers live in ``outputs``).

Readers never raise on a bad record: they yield the engine's verdict (a Record, or a BadRecord
with its reason code and line number) and go on, so one broken line cannot stop (or lose) the
rest of a stream. Lines are read with a bound (``textlines``), so no record grows memory.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from .csvread import read_csv
from .engine.records import BadRecord, Verdict, from_bytes
from .errors import InputError
from .jsonread import read_json_array
from .textlines import SNIFF_BYTES, Prepend, lines, sniff_encoding

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


def read_lines(stream: IO[bytes], source: str, max_chars: int, encoding: str = "utf-8") -> Iterator[Verdict]:
    """One text per line."""
    for n, raw in lines(stream, source, encoding, max_chars):
        yield raw if isinstance(raw, BadRecord) else from_bytes(raw, max_chars, source=source, position=n)


def read_jsonl(
    stream: IO[bytes], source: str, field: str, max_chars: int, encoding: str = "utf-8"
) -> Iterator[Verdict]:
    """One JSON object per line; the text is in ``field`` (dots reach into nested objects)."""
    for n, raw in lines(stream, source, encoding, max_chars, json=True):
        yield (
            raw
            if isinstance(raw, BadRecord)
            else from_bytes(raw, max_chars, json_field=field, source=source, position=n)
        )


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
    while len(head) < SNIFF_BYTES:
        chunk = read(4096)
        if not chunk:
            break
        head += chunk
        text = head.decode(encoding, errors="ignore").lstrip(" \t\r\n")
        if text:
            return io.BufferedReader(Prepend(head, stream)), text[0]
    return io.BufferedReader(Prepend(head, stream)), ""


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
