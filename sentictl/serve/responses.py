"""How the HTTP door answers: JSON bodies, result shapes, and every error as {"error", "error_type"[, "reason"]}.

Errors are raised as :class:`sentictl.errors.HttpError` subclasses; their status comes from the
one table in errors.py. A refused record (engine verdict) and a pydantic validation error are
turned into those types here, as are the web framework's own 404/405/422.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..engine import BadRecord, Result
from ..errors import (
    BackendError,
    BadRequest,
    HttpError,
    InputTooLarge,
    ValidationFailed,
    error_for_status,
    http_status,
)

log = logging.getLogger("sentictl.serve")

# Record reasons that are not "valid JSON with an unacceptable value" (422).
REASON_ERRORS: dict[str, type[HttpError]] = {"invalid_utf8": BadRequest, "bad_json": BadRequest,
                                             "too_long": InputTooLarge}
# pydantic error types that mean the same as a record reason code.
_PYDANTIC_REASONS = {"json_invalid": "bad_json", "missing": "missing_field", "string_type": "not_string",
                     "too_short": "empty"}


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: HttpError) -> Response:
    """The JSON error answer of an HttpError, with its status from the table."""
    return json_response(exc.body(), http_status(type(exc)), dict(exc.headers) or None)


def timed(data: Any, started: float, timings: Mapping[str, float]) -> Response:
    """A JSON answer with TEI's timing headers (milliseconds)."""
    return json_response(data, headers={
        "x-total-time": _ms(time.perf_counter() - started),
        "x-queue-time": _ms(timings["queue"]),
        "x-inference-time": _ms(timings["inference"]),
    })


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def demo_shape(r: Result) -> dict[str, Any]:
    """A result in the original demo's shape: label, score, text, metadata.cache_hit (+ scores)."""
    meta: dict[str, Any] = {"cache_hit": bool(r.get("cache_hit"))}
    if r.get("truncated"):
        meta["truncated"] = True
    return {"label": r["label"], "score": r["score"], "text": r["text"], "metadata": meta, "scores": r["scores"]}


def predictions(r: Result, raw_scores: bool) -> list[dict[str, Any]]:
    """TEI's shape: every label with its score, best first."""
    ranked = sorted(r["scores"].items(), key=lambda kv: kv[1], reverse=True)
    if raw_scores:
        # The graph's logits are not kept; log-probabilities are the logits up to a per-row constant.
        return [{"label": label, "score": round(math.log(max(p, 1e-9)), 6)} for label, p in ranked]
    return [{"label": label, "score": p} for label, p in ranked]


# ---------------------------------------------------------------------------------- errors
def refused(bad: BadRecord, where: str) -> HttpError:
    """The HttpError for a record the engine refused, carrying its reason code."""
    return REASON_ERRORS.get(bad.reason, ValidationFailed)(f"{where}: {bad.message}", reason=bad.reason)


def invalid(errors: Sequence[Mapping[str, Any]], hint: str = "") -> HttpError:
    """The HttpError for pydantic's validation errors: too many texts 413, malformed JSON 400, the rest 422."""
    for e in errors:
        ctx = e.get("ctx") or {}
        if e["type"] == "too_long" and "actual_length" in ctx:
            return InputTooLarge(f"{_where(e['loc'])}: {ctx['actual_length']} texts in one request is over the limit "
                                 f"of {ctx['max_length']} (--max-client-batch-size)")
        if e["type"] == "json_invalid":
            return BadRequest(f"malformed JSON: {ctx.get('error', e['msg'])}", reason="bad_json")
    reason = next((_PYDANTIC_REASONS[e["type"]] for e in errors if e["type"] in _PYDANTIC_REASONS), None)
    message = "; ".join(dict.fromkeys(f"{_where(e['loc'])}: {e['msg']}" for e in errors))
    return ValidationFailed(message + hint, reason=reason)


def _where(loc: Sequence[Any]) -> str:
    """A flat body's location: its field, then list indexes (FastAPI's "body" and union tags left out)."""
    names = [p for p in loc if isinstance(p, str)]
    if names and names[0] == "body":
        names = names[1:]
    return (names[0] if names else "body") + "".join(f"[{p}]" for p in loc if isinstance(p, int))


async def on_http_error(request: Request, exc: HttpError) -> Response:
    """Exception handler: an HttpError raised anywhere in a route or dependency."""
    return error_response(exc)


async def on_framework_error(request: Request, exc: HTTPException) -> Response:
    """Exception handler: the framework's own 404, 405 and body errors, in our error shape."""
    error = error_for_status(exc.status_code)(f"{exc.detail}: {request.method} {request.url.path}")
    response = error_response(error)
    if exc.headers:  # e.g. the Allow header of a 405
        response.headers.update(exc.headers)
    # A status the table does not list (415, 406, ...) keeps the framework's code under a near type.
    response.status_code = exc.status_code
    return response


async def on_request_validation(request: Request, exc: RequestValidationError) -> Response:
    """Exception handler: FastAPI's validation errors, in our error shape and statuses."""
    return error_response(invalid(exc.errors()))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Exception handler: anything else is a 500 whose details stay in the server log."""
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return error_response(BackendError("internal error: see the server log"))
