"""The start-up checks of a loaded model: the limits the engine relies on, tried against the graph with
a few tiny runs, so that a model that would fail on every batch is a start-up error, not a stream of
inference errors.

- a padded batch of two (the pad id must be a row of the embedding table);
- a text as long as max_length (positions), when the folder did not declare it: the longest
  power of two that runs is used instead, with a notice;
- the tokenizer's last id: past the embedding table, texts holding such ids fail one by one
  (reported as inference_error by the engine): said once here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..console import notice
from ..errors import ManifestError
from .session import is_runtime_error, runtime_message
from .tokenizer import SpecialIds

if TYPE_CHECKING:
    from .model import Model


def checked_max_length(model: Model, ids: SpecialIds) -> int:
    """Run the checks on a freshly loaded model (its special ids: ``ids``); the max length it runs:
    its own, or the longest power of two that runs where the folder only let us guess it."""
    # A graph of static shape (CoreML's) runs a fixed batch, always padded to its width.
    pair = [[ids.cls, ids.sep], [ids.cls, ids.cls, ids.sep]][: int(model.static_shape[0]) if model.static_shape else 2]
    failure = _failure(model, pair)
    if failure is not None:
        raise ManifestError(
            f"{model.model_dir}: the model fails on a padded batch of two texts "
            f"({failure}): is the pad token id {ids.pad} right for it?"
        )
    length = model.max_length
    if (model.manifest.get("foreign") or {}).get("max_length_assumed") and not model.static_shape:
        length = _longest_length(model, ids)
    last = model.tokenizer.get_vocab_size() - 1
    if _failure(model, [[ids.cls, last, ids.sep]]) is not None:
        notice(
            f"{model.name}: the tokenizer knows {last + 1:,} tokens, more than the model's embedding table "
            f"holds: texts holding the extra ones are reported as inference_error"
        )
    return length


def _longest_length(model: Model, ids: SpecialIds) -> int:
    """The folder declares no max length: the longest power of two (up to the guess) the graph runs."""
    length = model.max_length
    while length >= 8:
        if _failure(model, [[ids.cls] * (length - 1) + [ids.sep]]) is not None:
            length = 1 << ((length - 1).bit_length() - 1)  # the next power of two down
            continue
        if length != model.max_length:
            notice(
                f"{model.name}: the folder declares no max length (max_position_embeddings, "
                f"model_max_length) and the graph fails on {model.max_length} tokens: using {length}"
            )
        return length
    raise ManifestError(
        f"{model.model_dir}: the model fails even on a text of 8 tokens: is it a text classifier for this tokenizer?"
    )


def _failure(model: Model, rows: list[list[int]]) -> str | None:
    """ONNX Runtime's message when the graph fails on these rows, else None (other errors propagate)."""
    try:
        model.forward(rows)
    except Exception as exc:
        if not is_runtime_error(exc):
            raise
        return runtime_message(exc)
    return None
