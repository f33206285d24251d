"""What a text is, and whether it is acceptable: one set of rules and reason codes for every door.

A door hands over what it received (a line of a file, a Kafka value, a JSON field, an HTTP body)
and gets a verdict: a :class:`Record` to classify, or a :class:`BadRecord` with a stable reason
code that the door reports in its own way (score: an error line; bridge: the DLQ header
``sentictl-error``; serve: the ``reason`` field of the error body).

Normalisation, the same everywhere so that one text has one cache entry whichever door it came
through: a leading U+FEFF (byte-order mark) and one trailing ``\\r\\n``, ``\\n`` or ``\\r`` are
removed; nothing else changes. A text with nothing but white space and control characters
(NUL included) is ``empty``: there is nothing to classify; control characters inside a real text
are kept, as the tokenizer treats them as white space.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson

# Reason codes (stable: scripts, DLQ consumers and HTTP clients match on them) and their meaning.
REASONS = {
    "invalid_utf8": "the bytes are not valid UTF-8",
    "bad_json": "the record is not valid JSON",
    "missing_field": "the JSON object has no such field",
    "not_string": "the field is not a string",
    "empty": "nothing to classify (blank, white space or control characters only)",
    "too_long": "the text is over --max-chars characters",
    "bad_csv": "the CSV row cannot be parsed (or the file ends inside a quoted field)",
    "invalid_encoding": "the bytes are not valid in the file's declared encoding (UTF-16 or UTF-32)",
    "output_too_large": "the result record is larger than the Kafka broker or producer accepts",
    "inference_error": "the model failed on this text (ONNX Runtime raised; the other texts of its batch were scored)",
}
INFERENCE_ERROR = "inference_error"
INVALID_ENCODING = "invalid_encoding"
OUTPUT_TOO_LARGE = "output_too_large"


@dataclass(frozen=True)
class Record:
    """One text to classify, with where it came from (and the JSON object it was found in)."""

    text: str
    source: str = "-"
    position: int = 0
    data: Any = None


@dataclass(frozen=True)
class BadRecord:
    """Why a received value cannot be classified: a reason code and a sentence for people."""

    reason: str
    message: str
    source: str = "-"
    position: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report score writes: where, the reason code and the message."""
        return {"source": self.source, "line": self.position, "reason": self.reason, "error": self.message}


Verdict = Record | BadRecord


@dataclass(frozen=True)
class Input:
    """What the engine classifies: a text, a sentence pair, or a text cut at its start when too long.

    ``Input(text)`` is the plain text every door sends (the engine takes a ``str`` as one); it is
    cached under the text itself in the model's key space. Pairs and left-cut texts are cached in
    key spaces of their own (see ``kind``), so a pair never shares an entry with a text. Every
    input is encoded by the model's tokenizer (pairs: ``[CLS] a [SEP] b [SEP]`` with the second
    segment's token type ids), cut longest-first from ``truncate_from`` when over the limit.
    """

    text: str
    pair: str | None = None
    truncate_from: str = "right"  # "right" or "left": which end a text over the model's limit loses

    @property
    def plain(self) -> bool:
        """A single text cut at its end: the model's own key space."""
        return self.pair is None and self.truncate_from == "right"

    @property
    def raw(self) -> str | tuple[str, str]:
        """What the tokenizer takes: the text, or the (text, text pair) tuple."""
        return self.text if self.pair is None else (self.text, self.pair)

    @property
    def kind(self) -> str:
        """The key space of this kind of input, e.g. "pair-right" or "single-left"."""
        return f"{'single' if self.pair is None else 'pair'}-{self.truncate_from}"

    @property
    def key(self) -> str:
        """The cache key text: the text itself, or both texts as a JSON array (unambiguous)."""
        if self.pair is None:
            return self.text
        return orjson.dumps([self.text, self.pair]).decode()


def normalise(text: str) -> str:
    """Remove a leading byte-order mark and one trailing line ending; change nothing else."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def is_blank(text: str) -> bool:
    """True when the text holds only white space and control or format characters."""
    # Stops at the first printable character, so a long real text costs almost nothing.
    return not any(not (c.isspace() or unicodedata.category(c) in ("Cc", "Cf")) for c in text)


def check_text(text: str, max_chars: int, source: str = "-", position: int = 0, data: Any = None) -> Verdict:
    """The verdict for a decoded text (normalised here)."""
    text = normalise(text)
    if len(text) > max_chars:
        return BadRecord(
            "too_long",
            f"text is {len(text):,} characters, over the limit of {max_chars:,} (--max-chars)",
            source,
            position,
        )
    if is_blank(text):
        return BadRecord("empty", "empty text: nothing to classify", source, position)
    return Record(text, source, position, data)


def check_pair(
    first: str, second: str, max_chars: int, source: str = "-", position: int = 0
) -> tuple[str, str] | BadRecord:
    """The verdict for a sentence pair: both texts normalised and under --max-chars; empty only when
    both are blank (one blank side is still a pair the tokenizer can encode, as TEI accepts it)."""
    verdicts = [check_text(t, max_chars, source, position) for t in (first, second)]
    for v in verdicts:
        if isinstance(v, BadRecord) and v.reason != "empty":
            return v
    if all(isinstance(v, BadRecord) for v in verdicts):
        return BadRecord("empty", "empty pair: nothing to classify", source, position)
    a, b = (v.text if isinstance(v, Record) else normalise(t) for v, t in zip(verdicts, (first, second)))
    return a, b


def decode(raw: bytes, source: str = "-", position: int = 0) -> str | BadRecord:
    """UTF-8 text of raw bytes, or the invalid_utf8 verdict."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadRecord("invalid_utf8", "invalid UTF-8", source, position)


def field_text(obj: Any, field: str, source: str = "-", position: int = 0) -> str | BadRecord:
    """The string at a dotted field path of a parsed JSON value."""
    value = obj
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return BadRecord("missing_field", f"missing field {field!r}", source, position)
        value = value[part]
    if not isinstance(value, str):
        return BadRecord("not_string", f"field {field!r} is not a string", source, position)
    return value


def record_bound(max_chars: int, *, json: bool = False) -> int:
    """The most bytes a record (a line with its line ending, a JSON string) may take under --max-chars.

    A cheap bound that needs no decoding: UTF-8 needs at most 4 bytes per character, a JSON escape
    at most 12 (``\\ud83d\\ude00`` for one), and a line ending 2. Readers stop reading a record at
    this many bytes, so memory stays flat whatever the input.
    """
    return max_chars * (12 if json else 4) + 2


def too_long_record(bound: int, max_chars: int, source: str = "-", position: int = 0, what: str = "line") -> BadRecord:
    """The verdict for a record cut off at ``bound`` bytes while reading (its rest is skipped, never held)."""
    return BadRecord(
        "too_long",
        f"{what} is over {bound:,} bytes, more than --max-chars {max_chars:,} characters can take; skipped",
        source,
        position,
    )


def from_bytes(
    raw: bytes | None, max_chars: int, *, json_field: str | None = None, source: str = "-", position: int = 0
) -> Verdict:
    """The verdict for received bytes: the text itself, or (json_field) a field of a JSON object."""
    if raw is None or not raw.strip():
        return BadRecord("empty", "empty record: nothing to classify", source, position)
    bound = record_bound(max_chars, json=json_field is not None)
    if len(raw) > bound:
        return BadRecord(
            "too_long",
            f"record is {len(raw):,} bytes, over the limit of {max_chars:,} characters (--max-chars)",
            source,
            position,
        )
    text = decode(raw, source, position)
    if isinstance(text, BadRecord):
        return text
    if json_field is None:
        return check_text(text, max_chars, source, position)
    # A JSON line of NULs or other control characters is a blank line, not broken JSON: the same
    # verdict a plain-text line of them gets.
    if is_blank(text):
        return BadRecord("empty", "empty record: nothing to classify", source, position)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadRecord("bad_json", f"bad JSON: {exc}", source, position)
    value = field_text(obj, json_field, source, position)
    if isinstance(value, BadRecord):
        return value
    return check_text(value, max_chars, source, position, data=obj)
