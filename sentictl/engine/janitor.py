"""The bounded cache (--cache-max-size) and its expiry (--cache-ttl): the janitor of one SQLite cache.

A thread of its own wakes every ``JANITOR_EVERY_S`` (and when a write finds the file near the
bound), records last-use times of hits, deletes expired entries and evicts the least recently used
ones, a batch per transaction so no write waits long behind it. A write that finds the janitor
behind makes room itself (:meth:`Janitor.make_room`), so the bound holds either way.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from functools import partial

from .cachedb import CHUNK, TABLE, CacheDB
from .cacheformat import is_expired

# A row as put_many stores it: (key, encoded value, last use).
Row = tuple[str, bytes, float]

JANITOR_EVERY_S = 2.0
# Evict when the file's used pages pass HIGH of the bound, down to LOW (entries are scattered over
# the file's pages, so evicting frees room inside pages that later writes fill first).
HIGH_WATER = 0.9
LOW_WATER = 0.8
# Rows per DELETE transaction while evicting or expiring.
_EVICT_BATCH = 2000
# How often expired entries (--cache-ttl) are swept, besides those a lookup met.
SWEEP_EVERY_S = 60.0
# Last-use times kept for the next pass at most; past 10,000 a write wakes the janitor early.
_MAX_TOUCHED = 100_000
# How long a checkpoint of a -wal past half its allowance waits for the readers in it.
_CHECKPOINT_WAIT_MS = 500
_WAKE_TOUCHED = 10_000


def wal_allowance(max_size: int) -> int:
    """How much of the bound the -wal may take: a quarter, between 256 KiB and 16 MiB."""
    return min(16 << 20, max(256 << 10, max_size // 4))


class Janitor:
    """Eviction past the bound and deletion past the TTL for one cache file (max_size None: unbounded)."""

    def __init__(self, db: CacheDB, ttl: float | None, max_size: int | None):
        self._db = db
        self.ttl = ttl
        self.max_size = max_size
        self.evicted = 0
        self.expired = 0
        self._touch: dict[str, float] = {}
        self._stale: set[str] = set()
        self._evicting: int | None = None  # the used bytes at the last batch of a pass under way
        self._stalled = 0
        self._wal_peak = 0
        self._swept = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ what lookups report
    def touch(self, key: str, now: float) -> None:
        """A hit on key: its last-use time is recorded by the next pass, off the lookup's path."""
        if len(self._touch) < _MAX_TOUCHED:
            self._touch[key] = now

    def stale(self, key: str) -> None:
        """A lookup met key expired: the next pass deletes it (unless a fresh result replaces it first)."""
        self._stale.add(key)

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        if self._thread is None and not self._db.strict and not self._stopping:
            self._thread = threading.Thread(target=self._loop, name="sentictl-cache-janitor", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(JANITOR_EVERY_S)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.maintain()
            except Exception:  # noqa: BLE001 - a janitor that dies would let the file grow unseen
                time.sleep(JANITOR_EVERY_S)

    def stop(self, timeout: float) -> None:
        """Stop the thread and run a last pass for this process's hits and expired entries."""
        if self._thread is not None or self._touch or self._stale:
            self._stopping = True
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout=timeout)
            try:
                self.maintain()
            except Exception:  # noqa: BLE001 - closing never fails over the cache
                pass
        self._wake.set()

    # ------------------------------------------------------------------ one pass
    def maintain(self) -> None:
        """One janitor pass: record hits' last use, delete expired entries, evict past the bound."""
        touch, self._touch = self._touch, {}
        stale, self._stale = self._stale, set()
        if touch:
            self._db.run("write", partial(_record_use, pairs=[(used, key) for key, used in touch.items()]))
        if self.ttl is not None:
            self._expire(stale, time.time() - self.ttl)
        if self.max_size is not None:
            for _ in range(10_000):
                if not self._db.run("write", lambda conn: self._evict_batch(conn, used_bytes(conn))):
                    break
            self._db.run("write", self.checkpoint)
            self._db.run("write", self._shrink)

    def _expire(self, stale: set[str], cutoff: float) -> None:
        """Delete the expired entries lookups met, and every SWEEP_EVERY_S all the others."""
        keys = list(stale)
        for start in range(0, len(keys), CHUNK):
            part = keys[start : start + CHUNK]
            self.expired += self._db.run("write", partial(_delete_expired, keys=part, cutoff=cutoff)) or 0
        if time.monotonic() - self._swept > SWEEP_EVERY_S:
            self._swept = time.monotonic()
            # used >= stored time, so used older than the TTL is surely expired (a hit since then
            # is deleted when a lookup meets it, above).
            for _ in range(10_000):
                n = self._db.run("write", partial(_delete_where, where="used < ?", params=(cutoff,))) or 0
                self.expired += n
                if n < _EVICT_BATCH:
                    break

    # ------------------------------------------------------------------ the bound, on a write's connection
    def plan(self, rows: list[Row]) -> tuple[int, list[list[Row]]]:
        """What rows take in the file (0: unbounded), and the transactions to write them in."""
        if self.max_size is None:
            return 0, [rows]
        # What the rows take in the file: key, value, their index entries and page overhead.
        need = sum(2 * len(key) + len(blob) + 48 for key, blob, _ in rows)
        parts = [rows]
        if need > wal_allowance(self.max_size) // 16:
            # The -wal holds a transaction whole: under a small bound, several small ones.
            per = max(1, len(rows) * (wal_allowance(self.max_size) // 16) // need)
            parts = [rows[i : i + per] for i in range(0, len(rows), per)]
        return need, parts

    def make_room(self, conn: sqlite3.Connection, need: int) -> None:
        """Before a write of need bytes: when the janitor fell behind (or has not started), evict here."""
        if self.max_size is None:
            return
        used = used_bytes(conn)
        if used + need > self.budget():
            while self._evict_batch(conn, used, need) and (used := used_bytes(conn)) + need > self.budget():
                pass
            self.checkpoint(conn)

    def after_write(self, conn: sqlite3.Connection) -> None:
        """After a write: past the high water (or with many hits to record), wake the thread now."""
        if self.max_size is None:
            return
        if used_bytes(conn) > self.budget() * HIGH_WATER or len(self._touch) > _WAKE_TOUCHED:
            self._wake.set()

    def budget(self) -> int:
        """What the database file itself may use: the bound less the -wal's and -shm's share."""
        assert self.max_size is not None
        # The -wal holds each transaction whole, however it is checkpointed: the largest one seen counts.
        wal = max(wal_allowance(self.max_size), self._wal_peak + self._wal_peak // 8)
        return max(self.max_size - wal - 32 * 1024, self.max_size // 4)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """Past a quarter of its allowance, copy the -wal into the file and truncate it: at once when no
        reader is in it, else (past half its allowance) after waiting up to _CHECKPOINT_WAIT_MS for the
        readers, holding the write lock meanwhile; past a quarter but not half, a busy -wal is left for
        the next write."""
        if self.max_size is None:
            return
        try:
            wal = os.stat(self._db.file + "-wal").st_size
        except OSError:
            return
        self._wal_peak = max(self._wal_peak, wal)
        allowance = wal_allowance(self.max_size)
        if wal <= allowance // 4:
            return
        # Past a quarter of its allowance, try without waiting for a reader (another process's lookup);
        # past half, wait for the readers in it a moment: a reader that keeps finding the -wal busy
        # (a loaded machine stretches every lookup) would otherwise let it grow past the bound.
        wait_ms = 0 if wal <= allowance // 2 else _CHECKPOINT_WAIT_MS
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._db.busy_timeout * 1000)}")

    def _shrink(self, conn: sqlite3.Connection) -> None:
        """A file larger than its budget with free pages (the bound was lowered): hand them back."""
        pages, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        if free and pages * size > self.budget():
            conn.execute(f"PRAGMA incremental_vacuum({free})").fetchall()

    def _evict_batch(self, conn: sqlite3.Connection, used: int, need: int = 0) -> bool:
        """Past the high water, delete one batch of least recently used entries; whether more should go.

        Rows live in insertion order (rowid), and the oldest-used are mostly the oldest-inserted, so a
        batch frees whole pages, which later writes reuse before the file grows."""
        budget = self.budget() - need
        if used <= budget * (HIGH_WATER if self._evicting is None else LOW_WATER):
            self._evicting = None
            return False
        if self._evicting is not None and used >= self._evicting:
            self._stalled += 1
            if self._stalled >= 3:  # deleting no longer frees pages (entries used all over the file)
                self._evicting, self._stalled = None, 0
                return False
        else:
            self._stalled = 0
        self._evicting = used
        rows: int = conn.execute(f'SELECT COUNT(*) FROM "{TABLE}"').fetchone()[0]
        if not rows:
            return False
        excess = int(rows * (used - budget * LOW_WATER) / used) + 1
        # Small transactions: the -wal holds each one whole, and it counts against the bound.
        n = _delete_where(conn, "1", (), min(excess, _EVICT_BATCH, max(50, rows // 10)), order="used")
        self.evicted += n
        self.checkpoint(conn)
        if used > budget:  # pages freed by earlier batches: hand them back (files made with auto_vacuum)
            conn.execute(f"PRAGMA incremental_vacuum({max(1, (used - budget) // 4096)})")
        return n > 0


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file's pages in use (free pages are reused before the file grows)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _record_use(conn: sqlite3.Connection, pairs: list[tuple[float, str]]) -> None:
    """Set the last-use time of each (used, key), unless the entry already records a later one."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f'UPDATE "{TABLE}" SET used = ? WHERE key = ? AND (used IS NULL OR used < ?)',
        [(used, key, used) for used, key in pairs],
    )
    conn.execute("COMMIT")


def _delete_where(
    conn: sqlite3.Connection,
    where: str,
    params: tuple[object, ...],
    limit: int = _EVICT_BATCH,
    order: str | None = None,
) -> int:
    """Delete up to limit rows matching where (the first by order) in one transaction; how many."""
    by = f" ORDER BY {order}" if order else ""
    conn.execute("BEGIN IMMEDIATE")
    n: int = conn.execute(
        f'DELETE FROM "{TABLE}" WHERE key IN (SELECT key FROM "{TABLE}" WHERE {where}{by} LIMIT ?)', (*params, limit)
    ).rowcount
    conn.execute("COMMIT")
    return n


def _delete_expired(conn: sqlite3.Connection, keys: list[str], cutoff: float) -> int:
    """Delete those of keys still holding an entry stored before cutoff (a fresh result may have replaced one)."""
    conn.execute("BEGIN IMMEDIATE")
    stale = [
        key
        for key, blob in conn.execute(
            f'SELECT key, value FROM "{TABLE}" WHERE key IN ({",".join("?" * len(keys))})', keys
        )
        if is_expired(blob, cutoff)
    ]
    if stale:
        conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(stale))})', stale)
    conn.execute("COMMIT")
    return len(stale)
