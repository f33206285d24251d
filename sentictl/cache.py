"""The shared result cache: one SQLite file (WAL) used by score, serve and bridge at once.

Values are orjson documents, never pickles, so a planted or corrupted cache file can at worst
cause a cache miss, never run code. Keys are ``hash(model namespace, text)``: a new model,
variant or long-text mode never sees another's results.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from .errors import CacheError

TABLE = "results"
# SQLite's bound-variable limit is 32766 on modern builds; stay well under it.
_CHUNK = 500
_BUSY_TIMEOUT_MS = 30_000


def _encode(value: Any) -> bytes:
    return orjson.dumps(value)


def _decode(blob: bytes) -> Any:
    # sqlitedict would unpickle here by default; orjson only parses JSON, so a pickle fails.
    return orjson.loads(blob)


def cache_key(namespace: str, text: str) -> str:
    """The key of one text's result under one model namespace."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(namespace.encode())
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class ResultCache:
    """A SQLite result cache shared across processes; thread-safe through sqlitedict."""

    def __init__(self, path: str | Path, ttl: float | None = None):
        from sqlitedict import SqliteDict

        self.path = Path(path).expanduser()
        self.ttl = ttl if ttl and ttl > 0 else None
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = SqliteDict(
                str(self.path),
                tablename=TABLE,
                journal_mode="WAL",
                autocommit=False,
                encode=_encode,
                decode=_decode,
                outer_stack=False,
            )
            # sqlitedict turns syncing off; NORMAL is the WAL setting that survives an app crash
            # and the busy timeout lets several processes write without "database is locked".
            self._db.conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._db.conn.execute("PRAGMA synchronous = NORMAL")
            self._db.conn.commit()
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            raise CacheError(f"cannot open the result cache {self.path}: {exc} (use --cache PATH or --no-cache)") from None

    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached results for those texts that have one (one query per few hundred texts)."""
        keys = {cache_key(namespace, t): t for t in texts}
        found: dict[str, dict[str, Any]] = {}
        now = time.time()
        key_list = list(keys)
        try:
            for start in range(0, len(key_list), _CHUNK):
                part = key_list[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._db.conn.select(f'SELECT key, value FROM "{TABLE}" WHERE key IN ({marks})', part)
                for key, blob in rows:
                    try:
                        doc = _decode(blob)
                        result, stored = doc["r"], doc["t"]
                    except (orjson.JSONDecodeError, TypeError, KeyError):
                        self.corrupt += 1  # not ours (or a planted pickle): treat as a miss
                        continue
                    if self.ttl is not None and now - stored > self.ttl:
                        continue
                    found[keys[key]] = result
        except (sqlite3.Error, RuntimeError) as exc:
            raise CacheError(f"reading the result cache {self.path} failed: {exc}") from None
        with self._lock:
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, namespace: str, results: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store (text, result) pairs in one transaction; returns how many were written."""
        now = time.time()
        rows = [(cache_key(namespace, text), _encode({"r": result, "t": now})) for text, result in results]
        if not rows:
            return 0
        try:
            self._db.conn.executemany(f'REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)', rows)
            self._db.conn.commit(blocking=True)
        except (sqlite3.Error, RuntimeError) as exc:
            raise CacheError(f"writing the result cache {self.path} failed: {exc}") from None
        return len(rows)

    def stats(self) -> dict[str, Any]:
        """Entries, size on disk, and this process's hit/miss counters."""
        try:
            entries = self._db.conn.select_one(f'SELECT COUNT(*) FROM "{TABLE}"')[0]
        except (sqlite3.Error, RuntimeError) as exc:
            raise CacheError(f"reading the result cache {self.path} failed: {exc}") from None
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "ttl": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self, expired_only: bool = False) -> int:
        """Remove every entry (or only those past the TTL); returns how many were removed."""
        try:
            before = self._db.conn.select_one(f'SELECT COUNT(*) FROM "{TABLE}"')[0]
            if expired_only:
                if self.ttl is None:
                    return 0
                cutoff = time.time() - self.ttl
                stale = [key for key, blob in self._db.conn.select(f'SELECT key, value FROM "{TABLE}"') if _expired(blob, cutoff)]
                for start in range(0, len(stale), _CHUNK):
                    part = stale[start : start + _CHUNK]
                    self._db.conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(part))})', part)
            else:
                self._db.conn.execute(f'DELETE FROM "{TABLE}"')
            self._db.conn.commit(blocking=True)
            after = self._db.conn.select_one(f'SELECT COUNT(*) FROM "{TABLE}"')[0]
        except (sqlite3.Error, RuntimeError) as exc:
            raise CacheError(f"clearing the result cache {self.path} failed: {exc}") from None
        return before - after

    def close(self) -> None:
        """Commit and close the connection thread."""
        try:
            self._db.close()
        except Exception:  # closing twice or at interpreter exit must not raise
            pass

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _expired(blob: bytes, cutoff: float) -> bool:
    try:
        return _decode(blob)["t"] < cutoff
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return True  # unreadable entries are garbage either way
