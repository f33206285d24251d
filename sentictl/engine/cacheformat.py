"""What the result cache stores, the same in every backend (the SQLite file and Redis).

Keys are ``hash(model namespace, text)``: a new model, variant or long-text mode never sees
another's results. Values are orjson documents ``{"r": result, "t": time stored}``, never pickles,
so a planted or corrupted entry can at worst cause a cache miss, never run code.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .results import is_number, valid_result


def cache_key(namespace: str, text: str) -> str:
    """The key of one text's result under one model namespace."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(namespace.encode())
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def encode_entry(result: dict[str, Any], stored: float) -> bytes:
    """The stored value of a result, stored at time ``stored``."""
    return orjson.dumps({"r": result, "t": stored})


def decode_entry(blob: Any) -> tuple[dict[str, Any], float] | None:
    """A stored value's (result, time stored), or None when it is no sentictl entry; never an unpickling
    (sqlitedict would unpickle by default; orjson only parses JSON, so a pickle fails)."""
    try:
        doc = orjson.loads(blob)
        result, stored = doc["r"], doc["t"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if not valid_result(result) or not is_number(stored):
        return None
    return result, stored


def is_expired(blob: bytes, cutoff: float) -> bool:
    """Whether a stored value was stored before cutoff; an unreadable one counts as expired (garbage either way)."""
    try:
        return bool(orjson.loads(blob)["t"] < cutoff)
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return True
