"""text-embeddings-inference's routes: /predict (also POST / and /invocations), /tokenize, /decode, /info.

Request forms, answer shapes, field names and error types follow TEI's published API (a copy is
kept in tests/tei/openapi.json and checked against the running server), so TEI clients and
``huggingface_hub.InferenceClient`` work unchanged:

- ``inputs``: a text; a flat list of one text or of two (one sentence *pair*); a batch as a list
  of one- or two-text lists, answered as a list of lists. A flat list of three or more texts is
  refused (422) with the batch form in the message, as TEI refuses it.
- ``truncate`` (default: --auto-truncate), ``truncation_direction`` (Left/Right), ``raw_scores``
  (the model's logits instead of probabilities).

What differs on purpose: every text still goes through the engine's record rules (a blank text
is Empty, 400; one over --max-chars is 413) and is cached like any other door's.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..engine import BadRecord, Engine
from ..engine.records import Input
from ..errors import EmptyInput, TokenizerFailed, TooManyTokens, ValidationFailed
from .app import Service, accept, parse_json
from .models import predict_shape
from .responses import INPUTS_HINT, json_response, predictions, refused, timed, tokens

# The model's precision, in TEI's (and torch's) dtype words.
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
# A file-system path, absolute (POSIX, Windows drive or UNC) or relative to the current or home directory.
_PATH = re.compile(r"^(/|~|\.{1,2}[\\/]|[A-Za-z]:[\\/]|\\\\)")


class TeiRoutes:
    """The TEI route handlers, over the state every route shares (Service)."""

    def __init__(self, service: Service):
        self.service = service

    # -------------------------------------------------------------- /predict, POST /, /invocations
    async def predict(self, request: Request) -> Response:
        """Classify like TEI: every label's score (or logit), best first; a batch as a list of lists."""
        s = self.service
        with s.admission():
            started = time.perf_counter()
            engine = s.ready()
            body = await s.body(request)
            req, items, single = await s.off_loop(len(body), self.predict_inputs, engine, body)
            truncate = s.settings.auto_truncate if req.truncate is None else req.truncate
            if not truncate:
                await self.refuse_over_length(engine, items, single)
            results, timings = await s.classify(engine, items, logits=req.raw_scores)
            out = [predictions(r, req.raw_scores) for r in results]
            return timed(out[0] if single else out, started, timings, engine.fingerprint)

    def predict_inputs(self, engine: Engine, body: bytes) -> tuple[Any, list[Input], bool]:
        """The validated request, what to classify for each of its inputs, and whether it was one input."""
        s = self.service
        req = s.validate(s.models.predict, parse_json(body), INPUTS_HINT)
        side = req.truncation_direction.lower()
        shape = predict_shape(req.inputs)
        single = shape != "batch"
        sequences = [[req.inputs]] if shape == "text" else [req.inputs] if shape == "flat" else req.inputs
        items: list[Input] = []
        for i, seq in enumerate(sequences):
            where = "inputs" if single else f"inputs[{i}]"
            if len(seq) == 1:
                items.append(engine.input(accept(engine.check(seq[0]), where), None, side))
                continue
            pair = engine.check_pair(seq[0], seq[1])
            if isinstance(pair, BadRecord):
                raise refused(pair, where)
            items.append(engine.input(pair[0], pair[1], side))
        return req, items, single

    @staticmethod
    async def refuse_over_length(engine: Engine, items: list[Input], single: bool) -> None:
        """TooManyTokens (422, as TEI) for the first input over the model's token limit (truncate: false)."""
        chunked = engine.long == "chunk"
        # In chunk mode a single text is classified whole, whatever its length.
        checked = [i for i, item in enumerate(items) if not (chunked and item.pair is None)]
        if not checked:
            return
        limit = engine.max_length
        lengths = await asyncio.to_thread(engine.input_lengths, [items[i] for i in checked])
        for i, n in zip(checked, lengths):
            if n > limit:
                where = "inputs" if single else f"inputs[{i}]"
                raise TooManyTokens(
                    f"{where} has {n} tokens, over the model's limit of {limit}; send "
                    f'"truncate": true (or start the server with --auto-truncate) to cut it'
                )

    # -------------------------------------------------------------- /tokenize, /decode
    async def tokenize(self, request: Request) -> Response:
        """Tokens of each text as the model sees them: id, text, special, byte offsets (TEI's shape)."""
        s = self.service
        engine = s.ready()
        body = await s.body(request)
        return json_response(await s.off_loop(len(body), self.tokenize_body, engine, body))

    def tokenize_body(self, engine: Engine, body: bytes) -> list[list[dict[str, Any]]]:
        s = self.service
        req = s.validate(s.models.tokenize, parse_json(body))
        if req.prompt_name is not None:
            raise ValidationFailed(
                "prompt_name: this model has no prompts (a sentence-transformers setting of "
                "embedding models); leave it out or send null"
            )
        single = isinstance(req.inputs, str)
        texts = [req.inputs] if single else req.inputs
        for i, text in enumerate(texts):
            where = "inputs" if single else f"inputs[{i}]"
            if not text:
                raise EmptyInput(f"{where}: an empty text: nothing to tokenize")
            verdict = engine.check(text)
            # Blank is not empty here: its tokens (the special ones) are a fair answer, as TEI gives it.
            if isinstance(verdict, BadRecord) and verdict.reason != "empty":
                raise refused(verdict, where)
        # The texts as sent (not normalised), so the offsets point into what the client has.
        encodings = engine.tokenize(texts, req.add_special_tokens)
        return [tokens(e, t) for e, t in zip(encodings, texts)]

    async def decode(self, request: Request) -> Response:
        """The text of each id sequence (TEI's /decode)."""
        s = self.service
        engine = s.ready()
        body = await s.body(request)
        return json_response(await s.off_loop(len(body), self.decode_body, engine, body))

    def decode_body(self, engine: Engine, body: bytes) -> list[str]:
        s = self.service
        req = s.validate(s.models.decode, parse_json(body))
        batch = bool(req.ids) and isinstance(req.ids[0], list)
        sequences = req.ids if batch else [req.ids]
        for i, ids in enumerate(sequences):
            if not ids:
                raise EmptyInput(f"{f'ids[{i}]' if batch else 'ids'}: no ids: nothing to decode")
        self.refuse_unknown_ids(engine, sequences, batch)
        try:
            return engine.decode(sequences, req.skip_special_tokens)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise TokenizerFailed(f"cannot decode these ids: {exc}") from None

    @staticmethod
    def refuse_unknown_ids(engine: Engine, sequences: list[list[int]], batch: bool) -> None:
        """Tokenizer (422, as TEI) for the first id that names no token: tokenizers would decode it
        as nothing, and a 200 with "" would hide the client's mistake."""
        known: dict[int, bool] = {}
        for i, ids in enumerate(sequences):
            for j, token_id in enumerate(ids):
                ok = known.get(token_id)
                if ok is None:
                    ok = known[token_id] = not engine.unknown_id(token_id)
                if not ok:
                    where = f"ids[{i}][{j}]" if batch else f"ids[{j}]"
                    raise TokenizerFailed(
                        f"{where}: {token_id} is not a token id of this model "
                        f"(its vocabulary has ids 0 to {engine.vocab_size - 1})"
                    )

    # -------------------------------------------------------------- /info
    async def info(self) -> Response:
        """TEI's Info, then sentictl's own facts: names, never where the server keeps its files."""
        s = self.service
        engine = s.ready()
        settings = s.settings
        info = engine.info()
        model_dir = info.pop("model_dir", None)
        source = info.pop("source", None)
        source_id = source.get("id") if isinstance(source, dict) else source
        if isinstance(source, dict) and (source.get("kind") == "local" or _is_path(str(source_id or ""))):
            # A checkpoint exported from a local folder records that folder's path: its name is the id.
            source_id = _name(str(source_id or ""))
            source = {**source, "id": source_id}
        model_id = str(source_id or (_name(str(model_dir)) if model_dir else engine.name))
        revision = source.get("revision") if isinstance(source, dict) else None
        precision = engine.precision
        assert s.batcher is not None  # set together with the engine
        return json_response(
            _without_paths(
                {
                    "model_id": model_id,
                    "model_sha": revision if isinstance(revision, str) else None,
                    "model_dtype": _DTYPES.get(precision, precision),
                    "served_model_name": model_id,
                    "model_type": {
                        "classifier": {
                            "id2label": {str(i): label for i, label in enumerate(engine.labels)},
                            "label2id": {label: i for i, label in enumerate(engine.labels)},
                        }
                    },
                    "max_concurrent_requests": s.max_concurrent_requests,
                    "max_input_length": engine.max_length,
                    "max_batch_tokens": settings.max_batch_tokens,
                    "max_batch_requests": s.batcher.max_batch_size,
                    "max_client_batch_size": settings.max_client_batch_size,
                    "auto_truncate": settings.auto_truncate,
                    # tokenizers encodes a batch on every core (its own thread pool).
                    "tokenization_workers": os.cpu_count() or 1,
                    "version": __version__,
                    "sha": None,
                    "docker_label": None,
                    **info,
                    "source": source,
                    "model": engine.name,
                    "model_dir": _name(str(model_dir)) if model_dir else None,
                    "run_tokens": engine.run_tokens,
                    "max_wait_ms": settings.max_wait_ms,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_chars": settings.max_chars,
                    "max_connections": settings.max_connections,
                    "header_timeout": settings.header_timeout,
                    "body_timeout": settings.body_timeout,
                    "keep_alive_timeout": settings.keep_alive_timeout,
                    "cache": _name(str(s.cache.path)) if s.cache is not None else None,
                    "publish": settings.publish,
                    "uptime_s": round(time.time() - s.started, 3),
                }
            )
        )


def _is_path(value: str) -> bool:
    return bool(_PATH.match(value))


def _name(path: str) -> str:
    """The last part of a file-system path (a folder's or file's name)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1]


def _without_paths(value: Any) -> Any:
    """value with every string that is a file-system path cut to its last part (what /info may show)."""
    if isinstance(value, str):
        return _name(value) if _is_path(value) else value
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    return value
