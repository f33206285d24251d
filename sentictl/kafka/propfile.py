"""Kafka properties as the user wrote them: ``-X name=value`` and Java properties files (``--kafka-config``).

Only the syntax lives here (what a name and a value are, and where they came from, for messages);
what a property means is :mod:`sentictl.kafka.properties`'s.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..errors import KafkaConfigError


class Given(NamedTuple):
    """One property as the user wrote it: its value, where (``-X`` or ``FILE:LINE``) and its spelling."""

    value: str
    origin: str
    spelled: str

    @property
    def label(self) -> str:
        """How messages name it, e.g. ``linger.ms (-X)`` or ``sasl.mechanisms (client.properties:3)``."""
        return f"{self.spelled} ({self.origin})"


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_SEPARATORS = " \t\f=:"


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _split(line: str) -> tuple[str, str]:
    """A logical line's key and value, separated as Java's Properties.load separates them."""
    i = 0
    while i < len(line) and line[i] not in _SEPARATORS:
        i += 2 if line[i] == "\\" else 1
    key, rest = line[:i], line[i:]
    rest = rest.lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    # Trailing blanks are dropped (an escaped '\ ' survives): a stray space must not end up in a value.
    stripped = rest.rstrip(" \t\f")
    if stripped.endswith("\\") and len(stripped) < len(rest):
        stripped += rest[len(stripped)]
    return _unescape(key), _unescape(stripped)


def parse_properties(text: str, origin: str) -> list[tuple[str, Given]]:
    """(name, Given) for each property of a Java properties text: '#'/'!' comments, '=', ':' or blank separators,
    backslash continuation lines and escapes; ``origin`` names the file in messages."""
    lines = text.splitlines()
    out: list[tuple[str, Given]] = []
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        # An odd number of trailing backslashes continues the line on the next one.
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1:
            line = line[:-1] + (lines[i].lstrip(" \t\f") if i < len(lines) else "")
            i += 1
        key, value = _split(line)
        out.append((key, Given(value, f"{origin}:{start + 1}", key)))
    return out


def read_properties_file(path: str, option: str = "--kafka-config") -> list[tuple[str, Given]]:
    """The properties of a file (see :func:`parse_properties`); unreadable files raise one KafkaConfigError line."""
    full = os.path.expanduser(path)
    try:
        with open(full, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise KafkaConfigError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise KafkaConfigError(f"{option} {path}: a directory, not a properties file") from None
    except PermissionError:
        raise KafkaConfigError(f"{option} {path}: not readable by this user") from None
    except OSError as exc:
        raise KafkaConfigError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KafkaConfigError(f"{option} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_properties(text, path)


def parse_assignment(item: str) -> tuple[str, Given]:
    """One ``-X name=value`` (raises ValueError when there is no '=' or no name)."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{item!r} is not NAME=VALUE, e.g. -X compression.type=gzip")
    return name.strip(), Given(value, "-X", name.strip())
