"""The model's tokenizer as the engine runs it: loaded from verified bytes, with the special tokens
the model expects, cutting an input at its side, and a long text in chunk mode as sentence chunks.

``tokenizers`` is imported when a model loads, not with this module.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ManifestError
from .records import Input
from .verified import VerifiedFiles

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


class SpecialIds(NamedTuple):
    """The ids of the tokens the model's inputs are framed and padded with."""

    cls: int
    sep: int
    pad: int


def load_tokenizer(files: VerifiedFiles, spec: dict[str, Any], path: Path) -> tuple[Tokenizer, SpecialIds]:
    """The tokenizer from the verified bytes (never the file again; they are dropped once read), without
    padding or truncation, and its special ids as the manifest's tokenizer entry ``spec`` names them."""
    from tokenizers import Tokenizer

    try:
        tok: Tokenizer = Tokenizer.from_buffer(files.tokenizer)
    except Exception as exc:  # tokenizers raises plain Exception on a bad file
        raise ManifestError(f"cannot load tokenizer {path}: {exc}") from None
    finally:
        files.tokenizer = b""
    tok.no_padding()
    tok.no_truncation()
    cls: int | None = tok.token_to_id(spec.get("cls_token", "[CLS]"))
    sep: int | None = tok.token_to_id(spec.get("sep_token", "[SEP]"))
    pad: int | None = spec.get("pad_id", 0)
    if pad is None:  # a folder optimum wrote may name its pad token without its id
        pad = tok.token_to_id(spec.get("pad_token") or "[PAD]") or 0
    if cls is None or sep is None:
        raise ManifestError(f"tokenizer {path} lacks [CLS]/[SEP] tokens")
    return tok, SpecialIds(cls, sep, pad)


@dataclass(slots=True)
class Encoded:
    """One input as the model runs it: its id rows (one, or a long text's chunks in chunk mode) with
    their token type ids and weights (chunks count by their tokens), and whether it was cut."""

    input: Input
    rows: list[list[int]]
    types: list[list[int]]
    weights: list[float]
    truncated: bool

    @property
    def tokens(self) -> int:
        """Tokens it occupies in batches (special tokens included), which set batch budgets."""
        return sum(len(r) for r in self.rows)


class TextEncoder:
    """Texts to the id rows a model runs: ``max_length`` tokens per row (special tokens included);
    ``long`` "chunk" runs a longer single text as its sentence chunks, "truncate" cuts it."""

    def __init__(self, tokenizer: Tokenizer, ids: SpecialIds, max_length: int, long: str):
        self.tokenizer = tokenizer
        self.ids = ids
        self.max_length = max_length
        self.long = long
        # The tokenizer copies by truncation side (see copy), built on first use.
        self._copies: dict[str | None, Tokenizer] = {}
        self._copies_lock = threading.Lock()

    def copy(self, truncate_from: str | None) -> Tokenizer:
        """A copy of the tokenizer that adds the special tokens the model expects (the tokenizer's own
        post-processor, else [CLS] a [SEP] b [SEP] with type ids 0/1) and, with truncate_from "right"
        or "left", cuts an input to max_length tokens longest-first from that side, as
        ``tokenizers`` does. Copies, so the shared tokenizer is never reconfigured under another thread."""
        with self._copies_lock:
            tok = self._copies.get(truncate_from)
            if tok is None:
                from tokenizers import Tokenizer
                from tokenizers.processors import TemplateProcessing

                tok = Tokenizer.from_str(self.tokenizer.to_str())
                tok.no_padding()
                if tok.post_processor is None:
                    ids = self.ids
                    cls, sep = (self.tokenizer.id_to_token(i) for i in (ids.cls, ids.sep))
                    tok.post_processor = TemplateProcessing(
                        single=f"{cls} $A {sep}",
                        pair=f"{cls} $A {sep} $B:1 {sep}:1",
                        special_tokens=[(cls, ids.cls), (sep, ids.sep)],
                    )
                if truncate_from is None:
                    tok.no_truncation()
                else:
                    tok.enable_truncation(self.max_length, strategy="longest_first", direction=truncate_from)
                self._copies[truncate_from] = tok
            return tok

    def tokenize(
        self, inputs: Sequence[str | tuple[str, str]], add_special_tokens: bool = True, truncate_from: str | None = None
    ) -> list[Encoding]:
        """``tokenizers`` Encodings of texts or (text, text pair) tuples, special tokens as the model runs them."""
        encodings: list[Encoding] = self.copy(truncate_from).encode_batch(
            list(inputs), add_special_tokens=add_special_tokens
        )
        return encodings

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The texts of token id sequences."""
        texts: list[str] = self.tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return texts

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids without special tokens, for every text (what chunking packs)."""
        encodings: list[Encoding] = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_inputs(self, inputs: Sequence[Input]) -> list[Encoded]:
        """Each input as the model will run it: encoded by the tokenizer (cut at its side), or, in chunk
        mode, a single text over the limit as its sentence chunks."""
        out: dict[int, Encoded] = {}
        sides: dict[str | None, list[int]] = {}
        for i, x in enumerate(inputs):
            # Chunk mode classifies a single text whole: encoded uncut, chunked below when too long.
            sides.setdefault(None if self.long == "chunk" and x.pair is None else x.truncate_from, []).append(i)
        for side, where in sides.items():
            for i, e in zip(where, self.tokenize([inputs[i].raw for i in where], truncate_from=side)):
                if side is None and len(e.ids) > self.max_length:
                    out[i] = self._chunked(inputs[i])
                else:
                    out[i] = Encoded(inputs[i], [e.ids], [e.type_ids], [1.0], bool(e.overflowing))
        return [out[i] for i in range(len(inputs))]

    def _chunked(self, x: Input) -> Encoded:
        """A long text in chunk mode: its chunks, each weighted by its token count."""
        chunks = self.chunks(x.text, self.max_length - 2)
        rows = [[self.ids.cls, *c, self.ids.sep] for c in chunks]
        return Encoded(x, rows, [[0] * len(r) for r in rows], [float(len(c)) for c in chunks], False)

    def chunks(self, text: str, budget: int) -> list[list[int]]:
        """Split a long text into pieces of at most ``budget`` word pieces: whole sentences where possible."""
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        pieces: list[list[int]] = []
        for ids in self.encode(sentences):
            # A sentence longer than the limit is cut into fixed windows.
            for start in range(0, len(ids), budget):
                pieces.append(ids[start : start + budget])
        chunks: list[list[int]] = []
        current: list[int] = []
        for piece in pieces:
            if current and len(current) + len(piece) > budget:
                chunks.append(current)
                current = []
            current = current + piece
        if current:
            chunks.append(current)
        return chunks or [[]]
