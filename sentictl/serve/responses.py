"""How the HTTP door answers: JSON bodies, result shapes, and every error as {"error", "error_type"[, "reason"]}.

Errors are raised as :class:`sentictl.errors.HttpError` subclasses; their status comes from the
one table in errors.py and their error_type is one of text-embeddings-inference's. A refused
record (engine verdict) and a pydantic validation error are turned into those types here, as are
the web framework's own 404/405.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..engine import BadRecord, ResultDict
from ..errors import (
    BadRequest,
    EmptyInput,
    HttpError,
    InputTooLarge,
    InternalError,
    ValidationFailed,
    error_for_status,
    http_status,
)

log = logging.getLogger("sentictl.serve")

# Record reasons that are not "valid JSON with an unacceptable value" (422).
REASON_ERRORS: dict[str, type[HttpError]] = {
    "invalid_utf8": BadRequest,
    "bad_json": BadRequest,
    "too_long": InputTooLarge,
    "empty": EmptyInput,
}
# pydantic error types that mean the same as a record reason code.
_PYDANTIC_REASONS = {"json_invalid": "bad_json", "missing": "missing_field", "string_type": "not_string"}
# What a TEI batch looks like, for the message that refuses a flat list of three or more texts.
BATCH_FORM = '{"inputs": [["first text"], ["second text"], ["a text", "its pair"]]}'
# TEI's own words for what "inputs" may be (its deserializer's "expected ...").
INPUTS_HINT = {
    "inputs": " (expected a string, a pair of strings [string, string] or a batch of mixed strings "
    "and pairs [[string], [string, string], ...])"
}


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: HttpError) -> Response:
    """The JSON error answer of an HttpError, with its status from the table."""
    return json_response(exc.body(), http_status(type(exc)), dict(exc.headers) or None)


def timed(data: Any, started: float, timings: Mapping[str, float], fingerprint: str | None = None) -> Response:
    """A JSON answer with TEI's timing headers (milliseconds) and the fingerprint of the model that
    computed its results (x-model-fingerprint: a reload may switch models between two requests)."""
    headers = {
        "x-total-time": _ms(time.perf_counter() - started),
        "x-queue-time": _ms(timings["queue"]),
        "x-inference-time": _ms(timings["inference"]),
    }
    if fingerprint is not None:
        headers["x-model-fingerprint"] = fingerprint
    return json_response(data, headers=headers)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def demo_shape(r: ResultDict) -> dict[str, Any]:
    """A result in the original demo's shape: label, score, text, metadata.cache_hit (+ scores)."""
    meta: dict[str, Any] = {"cache_hit": bool(r.get("cache_hit"))}
    if r.get("truncated"):
        meta["truncated"] = True
    return {"label": r["label"], "score": r["score"], "text": r["text"], "metadata": meta, "scores": r["scores"]}


def predictions(r: ResultDict, raw_scores: bool) -> list[dict[str, Any]]:
    """TEI's shape: every label with its score (a probability, or the raw logit with raw_scores), best first."""
    scores = r["logits"] if raw_scores else r["scores"]
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    return [{"label": label, "score": score} for label, score in ranked]


def tokens(encoding: Any, text: str) -> list[dict[str, Any]]:
    """TEI's /tokenize shape for one text: id, text, special, and the byte offsets start/stop (null
    for special tokens), as TEI reports them from ``tokenizers``' byte offsets."""
    if text.isascii():
        starts = None
    else:  # character offsets (Python's tokenizers) → byte offsets (TEI's)
        starts = [0]
        for c in text:
            starts.append(starts[-1] + len(c.encode("utf-8", "surrogatepass")))
    out = []
    for tid, (start, stop), special, token in zip(
        encoding.ids, encoding.offsets, encoding.special_tokens_mask, encoding.tokens
    ):
        if special:
            out.append({"id": tid, "text": token, "special": True, "start": None, "stop": None})
        else:
            b0, b1 = (start, stop) if starts is None else (starts[start], starts[stop])
            out.append({"id": tid, "text": text[start:stop], "special": False, "start": b0, "stop": b1})
    return out


# ---------------------------------------------------------------------------------- errors
def refused(bad: BadRecord, where: str) -> HttpError:
    """The HttpError for a record the engine refused, carrying its reason code."""
    return REASON_ERRORS.get(bad.reason, ValidationFailed)(f"{where}: {bad.message}", reason=bad.reason)


def invalid(errors: Sequence[Mapping[str, Any]], hint: str | Mapping[str, str] = "") -> HttpError:
    """The HttpError for pydantic's validation errors: too many texts 413, an empty list 400 (Empty),
    malformed JSON 400, the rest 422. hint: appended to the message (by field: for errors in that field)."""
    for e in errors:
        ctx = e.get("ctx") or {}
        loc = tuple(e["loc"])
        where = _where(loc)
        if e["type"] == "too_long" and "actual_length" in ctx:
            n = ctx["actual_length"]
            if "flat" in loc:  # TEI reads a flat list as one text or one pair, never as a batch
                return ValidationFailed(
                    f"{where}: a flat list of {n} strings is neither one text [text] nor one sentence pair "
                    f"[text, text pair]; send several texts as a batch of lists: {BATCH_FORM}"
                )
            if isinstance(loc[-1], int):
                return ValidationFailed(
                    f"{where}: a list of {n} strings; each item of a batch is [text] or "
                    f"[text, text pair], e.g. {BATCH_FORM}"
                )
            return InputTooLarge(
                f"{where}: {n} inputs in one request is over the limit of {ctx['max_length']} (--max-client-batch-size)"
            )
        if e["type"] == "too_short" and ctx.get("actual_length") == 0:
            return EmptyInput(f"{where}: an empty list: nothing to do")
        if e["type"] == "json_invalid":
            return BadRequest(f"malformed JSON: {ctx.get('error', e['msg'])}", reason="bad_json")
    reason = next((_PYDANTIC_REASONS[e["type"]] for e in errors if e["type"] in _PYDANTIC_REASONS), None)
    message = "; ".join(dict.fromkeys(f"{_where(e['loc'])}: {e['msg']}" for e in errors))
    if not isinstance(hint, str):
        hint = next((hint[f] for e in errors for f in e["loc"][:1] if f in hint), "")
    return ValidationFailed(message + hint, reason=reason)


def _where(loc: Sequence[Any]) -> str:
    """A flat body's location: its field, then list indexes (FastAPI's "body" and union tags left out)."""
    names = [p for p in loc if isinstance(p, str)]
    if names and names[0] == "body":
        names = names[1:]
    return (names[0] if names else "body") + "".join(f"[{p}]" for p in loc if isinstance(p, int))


# Starlette types every exception handler as taking an Exception; it calls each with the type it is
# registered for, which the handlers below narrow to.
async def on_http_error(request: Request, exc: Exception) -> Response:
    """Exception handler (for HttpError): an HttpError raised anywhere in a route or dependency."""
    assert isinstance(exc, HttpError)
    return error_response(exc)


async def on_framework_error(request: Request, exc: Exception) -> Response:
    """Exception handler (for HTTPException): the framework's own 404, 405 and body errors, in our error shape."""
    assert isinstance(exc, HTTPException)
    error = error_for_status(exc.status_code)(f"{exc.detail}: {request.method} {request.url.path}")
    response = error_response(error)
    if exc.headers:  # e.g. the Allow header of a 405
        response.headers.update(exc.headers)
    # A status the table does not list (415, 406, ...) keeps the framework's code under a near type.
    response.status_code = exc.status_code
    return response


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Exception handler: anything else is a 500 whose details stay in the server log."""
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return error_response(InternalError("internal error: see the server log"))
