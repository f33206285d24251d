"""The SQLite file behind the result cache: its connections, and what happens when it fails.

The cache can fail; the work cannot. Every operation waits a bounded time (SQLite's busy
timeout); a failed read or write is announced once on stderr, the run goes on uncached, and the
cache is tried again after a back-off. A file SQLite calls damaged is checked (``PRAGMA
quick_check``) and, under a lock file, moved aside as ``<name>.corrupt-<time>`` so a fresh cache
can start. Nothing here raises unless the caller asked for ``strict`` (the ``cache`` command).

Why not sqlitedict's own connection: its worker thread runs ``commit()`` unguarded, so one failed
commit (disk full, I/O error) kills the thread and every later call waits forever, SIGTERM
included. This module drives SQLite through connections it owns instead, and keeps sqlitedict's
table layout (``key TEXT PRIMARY KEY, value BLOB`` in table ``results``), so
``SqliteDict(path, tablename="results", decode=orjson.loads)`` still reads the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..console import notice
from ..errors import CacheError
from .cachepath import UnsafeCachePath, open_lock, open_path

T = TypeVar("T")

TABLE = "results"
# SQLite's bound-variable limit is 32766 on modern builds; stay well under it.
CHUNK = 500
# The longest any cache call waits for another process's lock before it gives up (as a miss).
BUSY_TIMEOUT_S = 10.0
# After a failure, how long the cache is left alone before it is tried again.
RETRY_AFTER_S = 30.0
# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_DAMAGED_CODES = (11, 26)
# Held while a connection is prepared and opened. open_path creates the -wal/-shm files itself
# and closes its descriptor on them: were another thread's SQLite to open and lock that same new
# file in between, the close would drop its POSIX locks (SQLite's own warning, "How To Corrupt").
_OPENING = threading.Lock()


def is_damaged_error(exc: BaseException) -> bool:
    """Whether SQLite says the file is not a database or is malformed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGED_CODES
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message


@dataclass
class _Slot:
    """One connection for one kind of operation, so a write waiting for a lock never delays reads."""

    lock: threading.Lock
    conn: sqlite3.Connection | None = None
    inode: int | None = None
    generation: int = 0
    down_until: float = 0.0
    down: bool = False


class CacheDB:
    """The cache's SQLite file, shared across processes and threads: :meth:`run` a step on one of its
    connections ("read" or "write"); a failure costs that step (None), never the run."""

    def __init__(
        self,
        path: Path,
        *,
        strict: bool,
        busy_timeout: float,
        retry_after: float,
        on_failure: Callable[[str], None] | None,
        wal_allowance: int | None,
    ):
        self.path = path
        self.strict = strict
        self.busy_timeout = busy_timeout
        self.retry_after = retry_after
        # Called with "read", "write" or "damaged" on every failure (serve and bridge count them).
        self.on_failure = on_failure
        # The bytes the -wal may take (None: unbounded cache), see janitor.wal_allowance.
        self.wal_allowance = wal_allowance
        self.failures = 0
        # The database file's real path once vetted (path may be the user's own symlink to it).
        self.file = str(path)
        self._counter_lock = threading.Lock()
        self._generation = 0
        self._announced = False
        self._closed = False
        self._slots = {"read": _Slot(threading.Lock()), "write": _Slot(threading.Lock())}

    # ------------------------------------------------------------------ connections
    def _connect(self) -> tuple[sqlite3.Connection, int]:
        with _OPENING:
            real, (device, inode) = open_path(self.path)
            self.file = real
            # SQLite is given the path with no symlink left in it, so it opens the file just vetted.
            conn = sqlite3.connect(real, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            try:
                now = os.stat(real)
                if (now.st_dev, now.st_ino) != (device, inode):
                    raise UnsafeCachePath(f"{real} was replaced while sentictl opened it")
                self._configure(conn)
            except BaseException:
                conn.close()
                raise
        return conn, inode

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        # A new file can hand freed pages back to the file system (only settable before any table).
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # asking an existing file takes its lock
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is the WAL setting that survives an application crash without an fsync per commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        if self.wal_allowance is not None:
            # The -wal counts against the bound: checkpoint and truncate it well inside it.
            wal = self.wal_allowance
            conn.execute(f"PRAGMA journal_size_limit = {wal // 2}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal // 2 // 4096)}")
        # sqlitedict's layout plus the last-use time the bounded cache evicts by (NULL: oldest).
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB, used REAL)')
        _add_used_column(conn)

    def _ensure(self, slot: _Slot) -> sqlite3.Connection:
        if slot.conn is not None and slot.generation != self._generation:
            self._drop(slot)  # another operation moved a damaged file aside: reopen the fresh one
        if slot.conn is None:
            try:  # known before connecting, so a file found damaged is not confused with its successor
                slot.inode = os.stat(self.file).st_ino
            except OSError:
                slot.inode = None
            slot.conn, slot.inode = self._connect()
            slot.generation = self._generation
        return slot.conn

    @staticmethod
    def _drop(slot: _Slot) -> None:
        if slot.conn is not None:
            try:
                slot.conn.close()
            except sqlite3.Error:
                pass
        slot.conn = None

    def run(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run fn on the op's connection; None when the cache is unusable (strict: CacheError)."""
        slot = self._slots[op]
        if self._closed:
            return None
        if not slot.lock.acquire(timeout=self.busy_timeout):
            self._failed(op, slot, TimeoutError("another thread held the cache too long"), locked=False)
            return None
        try:
            if not self.strict and time.monotonic() < slot.down_until:
                return None
            for attempt in (1, 2):
                try:
                    out = fn(self._ensure(slot))
                except (sqlite3.Error, OSError) as exc:
                    self._rollback(slot)
                    if attempt == 1 and isinstance(exc, sqlite3.DatabaseError) and is_damaged_error(exc):
                        self._set_aside(slot, exc)
                        continue
                    self._failed(op, slot, exc)
                    return None
                if slot.down:
                    self._recovered(slot)
                return out
            return None
        finally:
            slot.lock.release()

    def close(self) -> None:
        """Close the connections (SQLite checkpoints the WAL when the last one closes)."""
        self._closed = True
        for slot in self._slots.values():
            if slot.lock.acquire(timeout=self.busy_timeout):
                try:
                    self._drop(slot)
                finally:
                    slot.lock.release()

    # ------------------------------------------------------------------ failures
    def _rollback(self, slot: _Slot) -> None:
        conn = slot.conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._drop(slot)

    def _recovered(self, slot: _Slot) -> None:
        slot.down = False
        if self._announced and not any(s.down for s in self._slots.values()):
            self._announced = False
            notice(f"the result cache {self.path} works again")

    def _failed(self, op: str, slot: _Slot, exc: BaseException, locked: bool = True) -> None:
        with self._counter_lock:
            self.failures += 1
        if self.on_failure is not None:
            self.on_failure(op)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if self.strict:
            raise CacheError(f"the result cache {self.path} cannot be used: {reason}") from None
        if locked:
            self._drop(slot)
            slot.down, slot.down_until = True, time.monotonic() + self.retry_after
        if not self._announced:
            self._announced = True
            verb = "read" if op == "read" else "written"
            notice(
                f"the result cache {self.path} cannot be {verb} ({reason}); going on without it "
                f"and trying again every {self.retry_after:g} s (--no-cache turns it off)"
            )

    def _set_aside(self, slot: _Slot, exc: BaseException) -> None:
        """Move a damaged file (and its -wal/-shm) aside, once, whichever process notices first."""
        import fcntl

        bad_inode = slot.inode
        self._drop(slot)
        if self.on_failure is not None:
            self.on_failure("damaged")
        real = self.file
        try:
            fd = open_lock(real)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                inode = os.stat(real).st_ino
            except OSError:
                return
            # Another process already rotated it: the file at this path is a fresh cache.
            if bad_inode is not None and inode != bad_inode:
                return
            if not self._damaged():
                return
            target = _rename_aside(real)
            self._generation += 1
            notice(f"the result cache {self.path} is damaged ({exc}); moved it to {target} and started a fresh one")
        except OSError:
            return
        finally:
            os.close(fd)  # releases the lock

    def _damaged(self) -> bool:
        """PRAGMA quick_check on a connection of its own: only asked after SQLite reported damage."""
        try:
            conn = sqlite3.connect(self.file, timeout=self.busy_timeout)
            try:
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return is_damaged_error(exc)
        except sqlite3.Error:
            return False
        return rows != [("ok",)]


def _rename_aside(real: str) -> str:
    """Rename the database at real (and its -wal/-shm) to ``<real>.corrupt-<time>-<pid>``; that name."""
    # A rename keeps the file's mode: the damaged copy stays as private as the cache was.
    target = f"{real}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for suffix in ("", "-wal", "-shm"):
        try:
            # An empty -wal/-shm (as open_path creates them) holds nothing of the damaged file.
            if suffix and os.lstat(f"{real}{suffix}").st_size == 0:
                continue
            os.replace(f"{real}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            continue
    return target


def _add_used_column(conn: sqlite3.Connection) -> None:
    """Give a cache file made before the bound (or by sqlitedict) its last-use column and index."""
    columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{TABLE}")')]
    if "used" not in columns:
        try:
            conn.execute(f'ALTER TABLE "{TABLE}" ADD COLUMN used REAL')
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it first
                raise
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{TABLE}_used" ON "{TABLE}" (used)')
