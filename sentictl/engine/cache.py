"""The shared result cache: one SQLite file (WAL) used by score, serve and bridge at once.

Values are orjson documents, never pickles, and keys are ``hash(model namespace, text)``
(:mod:`sentictl.engine.cacheformat`, the same for Redis). The cache can fail; the work cannot: a
failed read or write costs misses, never the run, and a damaged file is moved aside
(:mod:`sentictl.engine.cachedb`). The file is opened the way ``fs.protected_symlinks`` would, its
files private (:mod:`sentictl.engine.cachepath`). A bound (--cache-max-size) and a TTL are kept by
a janitor thread (:mod:`sentictl.engine.janitor`). :func:`open_cache` chooses the backend.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cachedb import BUSY_TIMEOUT_S, CHUNK, RETRY_AFTER_S, TABLE, CacheDB
from .cacheformat import cache_key, decode_entry, encode_entry, is_expired
from .janitor import Janitor, Row, wal_allowance

if TYPE_CHECKING:
    from .rediscache import RedisCache

# A hit refreshes its entry's last-use time only when that is older than this: LRU to the minute
# costs one UPDATE per entry per minute, not one per hit.
TOUCH_AFTER_S = 60.0


class ResultCache:
    """A SQLite result cache shared across processes and threads; failures cost misses, not runs."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        ttl: float | None = None,
        *,
        strict: bool = False,
        busy_timeout: float = BUSY_TIMEOUT_S,
        retry_after: float = RETRY_AFTER_S,
        on_failure: Callable[[str], None] | None = None,
        max_size: int | None = None,
    ):
        self.path = Path(path).expanduser()
        self.ttl = ttl if ttl and ttl > 0 else None
        self.strict = strict
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._counter_lock = threading.Lock()
        # The bound in bytes of the file and its -wal/-shm (None: unbounded).
        self.max_size = max_size if max_size and max_size > 0 else None
        self._db = CacheDB(
            self.path,
            strict=strict,
            busy_timeout=busy_timeout,
            retry_after=retry_after,
            on_failure=on_failure,
            wal_allowance=wal_allowance(self.max_size) if self.max_size is not None else None,
        )
        self._janitor = Janitor(self._db, self.ttl, self.max_size)
        # Open now so that a bad location is said at start, not at the first batch.
        self._db.run("read", _nothing)

    # ------------------------------------------------------------------ counters and settings
    @property
    def on_failure(self) -> Callable[[str], None] | None:
        """Called with "read", "write" or "damaged" on every failure (serve and bridge count them)."""
        return self._db.on_failure

    @on_failure.setter
    def on_failure(self, hook: Callable[[str], None] | None) -> None:
        self._db.on_failure = hook

    @property
    def failures(self) -> int:
        return self._db.failures

    @property
    def evicted(self) -> int:
        return self._janitor.evicted

    @property
    def expired(self) -> int:
        return self._janitor.expired

    # ------------------------------------------------------------------ the API
    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached results for those texts that have one (one query per few hundred texts)."""
        keys = {cache_key(namespace, t): t for t in texts}
        key_list = list(keys)
        rows = (self._db.run("read", lambda conn: _select(conn, key_list)) if key_list else None) or []
        found: dict[str, dict[str, Any]] = {}
        now = time.time()
        bad = 0
        bounded = self.max_size is not None
        for key, blob, used in rows:
            entry = decode_entry(blob)
            if entry is None:
                bad += 1  # not ours (or a planted pickle): a miss, overwritten by the fresh result
                continue
            result, stored = entry
            if self.ttl is not None and now - stored > self.ttl:
                if bounded:
                    self._janitor.stale(key)  # deleted by the janitor (unless a fresh result replaces it first)
                continue
            found[keys[key]] = result
            # (SQLite hands back an int, a float, text, bytes or NULL: a number is a last-use time.)
            if bounded and (not isinstance(used, (int, float)) or now - used > TOUCH_AFTER_S):
                self._janitor.touch(key, now)  # recorded by the janitor, off the lookup's path
        with self._counter_lock:
            self.corrupt += bad
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, namespace: str, results: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store (text, result) pairs in one transaction; returns how many were written (0 on failure)."""
        now = time.time()
        rows: list[Row] = [(cache_key(namespace, text), encode_entry(result, now), now) for text, result in results]
        if not rows:
            return 0
        need, parts = self._janitor.plan(rows)

        def write(conn: sqlite3.Connection) -> int:
            self._janitor.make_room(conn, need)
            for part in parts:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(f'REPLACE INTO "{TABLE}" (key, value, used) VALUES (?, ?, ?)', part)
                conn.execute("COMMIT")
                self._janitor.checkpoint(conn)
            self._janitor.after_write(conn)
            return len(rows)

        written = self._db.run("write", write) or 0
        if self.max_size is not None or self.ttl is not None:
            self._janitor.start()
        return written

    def maintain(self) -> None:
        """One janitor pass now: record hits' last use, delete expired entries, evict past the bound."""
        self._janitor.maintain()

    def stats(self) -> dict[str, Any]:
        """Entries, size on disk, and this process's hit/miss counters."""
        entries = self._db.run("read", lambda conn: conn.execute(f'SELECT COUNT(*) FROM "{TABLE}"').fetchone()[0])
        real = Path(self._db.file)
        size = sum(
            p.stat().st_size
            for p in real.parent.glob(glob_escape(real.name) + "*")
            if p.is_file() and p.name.startswith(real.name) and ".corrupt-" not in p.name
        )
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "max_bytes": self.max_size,
            "ttl": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self, expired_only: bool = False) -> int:
        """Remove every entry (or only those past the TTL); returns how many were removed."""
        if expired_only and self.ttl is None:
            return 0
        cutoff = time.time() - (self.ttl or 0)

        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            if expired_only:
                stale = [
                    key for key, blob in conn.execute(f'SELECT key, value FROM "{TABLE}"') if is_expired(blob, cutoff)
                ]
                for start in range(0, len(stale), CHUNK):
                    part = stale[start : start + CHUNK]
                    conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(part))})', part)
                removed = len(stale)
            else:
                removed = conn.execute(f'DELETE FROM "{TABLE}"').rowcount
            conn.execute("COMMIT")
            return removed

        return self._db.run("write", delete) or 0

    def close(self) -> None:
        """Close the connections (SQLite checkpoints the WAL when the last one closes), after the
        janitor's last pass for this process's hits and expired entries."""
        self._janitor.stop(timeout=self._db.busy_timeout)
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nothing(conn: sqlite3.Connection) -> None:
    """A step that only opens the connection."""


def _select(conn: sqlite3.Connection, keys: list[str]) -> list[tuple[str, object, object]]:
    """The (key, value, last use) rows of those keys that have one, a query per CHUNK keys."""
    rows: list[tuple[str, object, object]] = []
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        marks = ",".join("?" * len(part))
        rows += conn.execute(f'SELECT key, value, used FROM "{TABLE}" WHERE key IN ({marks})', part).fetchall()
    return rows


def parse_size(value: str | int | None) -> int | None:
    """A size in bytes from "500M", "2G", "1048576" (K/M/G/T are powers of 1024); None or 0: unbounded."""
    if value is None:
        return None
    if isinstance(value, int):
        return value or None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if text and text[-1] in "KMGT":
        scale = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a size: use bytes or a K/M/G suffix (500M, 2G)") from None
    if number < 0 or math.isnan(number) or math.isinf(number):
        raise ValueError(f"{value!r} is not a size: use bytes or a K/M/G suffix (500M, 2G)")
    return int(number * scale) or None


def open_cache(
    location: str | os.PathLike[str],
    ttl: float | None = None,
    *,
    strict: bool = False,
    password: str | None = None,
    max_size: int | str | None = "default",
    on_failure: Callable[[str], None] | None = None,
) -> ResultCache | RedisCache:
    """The result cache at a location: a redis://, rediss:// or unix:// URL (Redis), else a SQLite file.

    The one place a backend is chosen; every door and the `cache` command open their cache here.
    password: for a Redis URL without one (read from --cache-password-file, so it never shows in ps).
    max_size: the SQLite file's bound in bytes or as "500M" ("default": SENTICTL_CACHE_MAX_SIZE or 1G;
    None or 0: unbounded). Redis bounds itself (maxmemory).
    """
    from .. import config
    from .rediscache import RedisCache, is_url

    if max_size == "default":
        max_size = config.default_cache_max_size()
    bound = parse_size(max_size)

    if is_url(os.fspath(location)):
        return RedisCache(
            os.fspath(location),
            ttl=ttl,
            strict=strict,
            password=password,
            on_failure=on_failure,
            timeout=2.0 if strict else None,
        )
    return ResultCache(location, ttl=ttl, strict=strict, on_failure=on_failure, max_size=bound)
