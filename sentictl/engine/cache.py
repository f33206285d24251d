"""The shared result cache: one SQLite file (WAL) used by score, serve and bridge at once.

Values are orjson documents, never pickles, so a planted or corrupted entry can at worst cause a
cache miss, never run code. Keys are ``hash(model namespace, text)``: a new model, variant or
long-text mode never sees another's results.

The cache can fail; the work cannot. Every operation waits a bounded time (SQLite's busy
timeout); a failed read or write is announced once on stderr, the run goes on uncached, and the
cache is tried again after a back-off. A file SQLite calls damaged is checked (``PRAGMA
quick_check``) and, under a lock file, moved aside as ``<name>.corrupt-<time>`` so a fresh cache
can start. Nothing here raises to a door unless it asked for ``strict`` (the ``cache`` command).

Why not sqlitedict's own connection: its worker thread runs ``commit()`` unguarded, so one failed
commit (disk full, I/O error) kills the thread and every later call waits forever, SIGTERM
included. This module drives SQLite through connections it owns instead, and keeps sqlitedict's
table layout (``key TEXT PRIMARY KEY, value BLOB`` in table ``results``), so
``SqliteDict(path, tablename="results", decode=orjson.loads)`` still reads the file.

The cache path may lie in a directory others can write (``/tmp``), and sentictl may run as root, so
the file is opened the way the kernel's ``fs.protected_symlinks`` would, whatever the host sets
(see ``_open_path``): a symlink at the cache path (or at its -wal, -shm, -journal or .lock) owned by
another user is never followed, and the cache's files are created 0600 (their directory 0700): they
hold every text verbatim.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import orjson

from ..console import notice
from ..errors import CacheError
from .results import is_number, valid_result

TABLE = "results"
# SQLite's bound-variable limit is 32766 on modern builds; stay well under it.
_CHUNK = 500
# The longest any cache call waits for another process's lock before it gives up (as a miss).
BUSY_TIMEOUT_S = 10.0
# After a failure, how long the cache is left alone before it is tried again.
RETRY_AFTER_S = 30.0
# The bounded cache (--cache-max-size): its janitor thread wakes this often (and when a write finds
# the file near the bound), records last-use times of hits, deletes expired entries and evicts the
# least recently used ones, a batch per transaction so no write waits long behind it.
JANITOR_EVERY_S = 2.0
# A hit refreshes its entry's last-use time only when that is older than this: LRU to the minute
# costs one UPDATE per entry per minute, not one per hit.
TOUCH_AFTER_S = 60.0
# Evict when the file's used pages pass HIGH of the bound, down to LOW (entries are scattered over
# the file's pages, so evicting frees room inside pages that later writes fill first).
HIGH_WATER = 0.9
LOW_WATER = 0.8
# Rows per DELETE transaction while evicting or expiring.
_EVICT_BATCH = 2000
# How often expired entries (--cache-ttl) are swept, besides those a lookup met.
SWEEP_EVERY_S = 60.0
# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_DAMAGED_CODES = (11, 26)
# The files SQLite (and _set_aside) keep beside the database, by suffix.
COMPANIONS = ("-wal", "-shm", "-journal", ".lock")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Held while a connection is prepared and opened. This module creates the -wal/-shm files itself
# and closes its descriptor on them: were another thread's SQLite to open and lock that same new
# file in between, the close would drop its POSIX locks (SQLite's own warning, "How To Corrupt").
_OPENING = threading.Lock()


class UnsafeCachePath(OSError):
    """The cache path is a symlink (or file) sentictl will not open: another user could aim it anywhere."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)


def _refuse_link(link: str, st: os.stat_result, euid: int) -> None:
    if st.st_uid != euid:
        raise UnsafeCachePath(
            f"{link} is a symbolic link owned by uid {st.st_uid}, not by this process's "
            f"uid {euid}: sentictl does not follow it; remove it or choose another --cache"
        )


def _shared_dir(st: os.stat_result) -> bool:
    """A sticky directory everyone may write (/tmp): where the kernel's protected_* rules apply."""
    return bool(st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH)


def _resolve(path: Path) -> tuple[str, list[str]]:
    """The cache path with every symlink resolved, each checked before it is followed; and the names
    still missing (directories to create, then the file) below the deepest one that exists.

    The file's own symlink (the last name, also when a chain of links ends there) must be owned by
    this process's user. A directory symlink on the way is followed as the kernel's
    protected_symlinks follows it: anywhere but in a sticky world-writable directory, and there only
    when it is owned by this user or by that directory's owner (/tmp's root, say).
    """
    euid = os.geteuid()
    if path.is_absolute():
        done, todo = "/", list(path.parts[1:])
    else:
        done, todo = os.getcwd(), list(path.parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            done = os.path.dirname(done)
            continue
        here = os.path.join(done, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if ".." in todo:
                raise
            return done, [part, *todo]
        if not stat.S_ISLNK(st.st_mode):
            done = here
            continue
        if not todo:
            _refuse_link(here, st, euid)
        else:
            parent = os.stat(done)
            if _shared_dir(parent) and st.st_uid not in (euid, parent.st_uid):
                raise UnsafeCachePath(
                    f"{here} is a symbolic link owned by uid {st.st_uid} in a directory "
                    f"anyone may write: sentictl does not follow it; choose another --cache"
                )
        hops += 1
        if hops > 40:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
        target = Path(os.readlink(here))
        if target.is_absolute():
            done, todo = "/", [*target.parts[1:], *todo]
        else:
            todo = [*target.parts, *todo]
    return done, []


def _check_file(name: str, euid: int, directory: os.stat_result) -> os.stat_result | None:
    """lstat of one of the cache's files, refused when another user could have aimed it anywhere."""
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        _refuse_link(name, st, euid)
    elif _shared_dir(directory) and (st.st_uid not in (euid, directory.st_uid) or st.st_nlink > 1):
        # What fs.protected_regular refuses, and a second name (a hard link another user made to
        # their victim): such a file can be anything by the time SQLite opens it.
        raise UnsafeCachePath(
            f"{name} belongs to uid {st.st_uid} or has other names, in a directory anyone "
            f"may write: sentictl does not open it; choose another --cache"
        )
    return st


def _create(name: str) -> bool:
    """Create an empty 0600 file, never through a symlink; False when the name exists already."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _open_path(path: Path) -> tuple[str, tuple[int, int]]:
    """The real path SQLite may open for the cache at path, its files vetted and, where missing,
    created 0600 (directories 0700); and the (device, inode) the database file must still have once
    SQLite has opened it. Raises UnsafeCachePath (or OSError) instead.

    Creating a missing file (the database, its -wal and -shm; the -journal a fresh one needs while
    it is switched to WAL) with O_CREAT|O_EXCL|O_NOFOLLOW decides a race with another user at once:
    either the name is this process's file, which in a sticky directory nobody else can replace,
    or it already exists and is checked like any other. SQLite gives its -wal/-shm/-journal the
    database file's mode (and, as root, owner), so a 0600 database keeps them 0600 too.
    """
    euid = os.geteuid()
    for _ in range(5):
        parent, missing = _resolve(path)
        if len(missing) > 1:
            for name in missing[:-1]:  # directories sentictl creates: 0700, as the files are 0600
                parent = os.path.join(parent, name)
                try:
                    os.mkdir(parent, 0o700)
                except FileExistsError:
                    break
            else:
                missing = missing[-1:]
            if len(missing) > 1:
                continue  # someone else made one of them meanwhile: resolve again
        real = os.path.join(parent, missing[0]) if missing else parent
        directory = os.stat(os.path.dirname(real))
        st = _check_file(real, euid, directory)
        for suffix in COMPANIONS:
            _check_file(real + suffix, euid, directory)
        created = False
        if st is None:
            if not _create(real):
                continue  # appeared between the check and now: check it again
            created = True
            st = os.lstat(real)
        elif stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"{real} is a directory")
        for suffix in ("-wal", "-shm", "-journal") if created else ("-wal", "-shm"):
            if not _create(real + suffix):
                _check_file(real + suffix, euid, directory)
        return real, (st.st_dev, st.st_ino)
    raise UnsafeCachePath(f"{path} kept changing while sentictl opened it")


def _encode(value: Any) -> bytes:
    return orjson.dumps(value)


def _decode(blob: bytes) -> Any:
    # sqlitedict would unpickle here by default; orjson only parses JSON, so a pickle fails.
    return orjson.loads(blob)


def decode_entry(blob: Any) -> tuple[dict[str, Any], float] | None:
    """A stored value's (result, time stored), or None when it is no sentictl entry; the same for
    every backend, and never an unpickling."""
    try:
        doc = _decode(blob)
        result, stored = doc["r"], doc["t"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if not valid_result(result) or not is_number(stored):
        return None
    return result, stored


def cache_key(namespace: str, text: str) -> str:
    """The key of one text's result under one model namespace."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(namespace.encode())
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


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


class ResultCache:
    """A SQLite result cache shared across processes and threads; failures cost misses, not runs."""

    def __init__(
        self,
        path: str | Path,
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
        self.busy_timeout = busy_timeout
        self.retry_after = retry_after
        # Called with "read", "write" or "damaged" on every failure (serve and bridge count them).
        self.on_failure = on_failure
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.failures = 0
        self._counter_lock = threading.Lock()
        self._generation = 0
        self._announced = False
        self._closed = False
        self._slots = {"read": _Slot(threading.Lock()), "write": _Slot(threading.Lock())}
        # The database file's real path once vetted (self.path may be the user's own symlink to it).
        self._file = str(self.path)
        # The bound in bytes of the file and its -wal/-shm (None: unbounded), and the janitor's state.
        self.max_size = max_size if max_size and max_size > 0 else None
        self.evicted = 0
        self.expired = 0
        self._touch: dict[str, float] = {}
        self._stale: set[str] = set()
        self._evicting: int | None = None  # the used bytes at the last batch of a pass under way
        self._stalled = 0
        self._wal_peak = 0
        self._swept = 0.0
        self._wake = threading.Event()
        self._janitor: threading.Thread | None = None
        self._stopping = False
        # Open now so that a bad location is said at start, not at the first batch.
        self._run("read", lambda conn: None)

    # ------------------------------------------------------------------ connections
    def _connect(self) -> tuple[sqlite3.Connection, int]:
        with _OPENING:
            real, (device, inode) = _open_path(self.path)
            self._file = real
            # SQLite is given the path with no symlink left in it, so it opens the file just vetted.
            conn = sqlite3.connect(real, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            try:
                now = os.stat(real)
                if (now.st_dev, now.st_ino) != (device, inode):
                    raise UnsafeCachePath(f"{real} was replaced while sentictl opened it")
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                # A new file can hand freed pages back to the file system (only settable before any table).
                if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # asking an existing file takes its lock
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL is the WAL setting that survives an application crash without an fsync per commit.
                conn.execute("PRAGMA synchronous = NORMAL")
                if self.max_size is not None:
                    # The -wal counts against the bound: checkpoint and truncate it well inside it.
                    wal = _wal_allowance(self.max_size)
                    conn.execute(f"PRAGMA journal_size_limit = {wal // 2}")
                    conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal // 2 // 4096)}")
                # sqlitedict's layout plus the last-use time the bounded cache evicts by (NULL: oldest).
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB, used REAL)')
                _add_used_column(conn)
            except BaseException:
                conn.close()
                raise
        return conn, inode

    def _ensure(self, slot: _Slot) -> sqlite3.Connection:
        if slot.conn is not None and slot.generation != self._generation:
            self._drop(slot)  # another operation moved a damaged file aside: reopen the fresh one
        if slot.conn is None:
            try:  # known before connecting, so a file found damaged is not confused with its successor
                slot.inode = os.stat(self._file).st_ino
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

    def _run(self, op: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn on the op's connection; None when the cache is unusable (strict: CacheError)."""
        slot = self._slots[op]
        if self._closed:
            return None
        if not slot.lock.acquire(timeout=self.busy_timeout):
            return self._failed(op, slot, TimeoutError("another thread held the cache too long"), locked=False)
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
                    return self._failed(op, slot, exc)
                if slot.down:
                    slot.down = False
                    if self._announced and not any(s.down for s in self._slots.values()):
                        self._announced = False
                        notice(f"the result cache {self.path} works again")
                return out
            return None
        finally:
            slot.lock.release()

    def _rollback(self, slot: _Slot) -> None:
        conn = slot.conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._drop(slot)

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
        return None

    def _set_aside(self, slot: _Slot, exc: BaseException) -> None:
        """Move a damaged file (and its -wal/-shm) aside, once, whichever process notices first."""
        import fcntl

        bad_inode = slot.inode
        self._drop(slot)
        if self.on_failure is not None:
            self.on_failure("damaged")
        real = self._file
        try:
            fd = os.open(f"{real}.lock", os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
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
            # A rename keeps the file's mode: the damaged copy stays as private as the cache was.
            target = f"{real}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            for suffix in ("", "-wal", "-shm"):
                try:
                    # An empty -wal/-shm (as _open_path creates them) holds nothing of the damaged file.
                    if suffix and os.lstat(f"{real}{suffix}").st_size == 0:
                        continue
                    os.replace(f"{real}{suffix}", f"{target}{suffix}")
                except FileNotFoundError:
                    continue
            self._generation += 1
            notice(f"the result cache {self.path} is damaged ({exc}); moved it to {target} and started a fresh one")
        except OSError:
            return
        finally:
            os.close(fd)  # releases the lock

    def _damaged(self) -> bool:
        """PRAGMA quick_check on a connection of its own: only asked after SQLite reported damage."""
        try:
            conn = sqlite3.connect(self._file, timeout=self.busy_timeout)
            try:
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return is_damaged_error(exc)
        except sqlite3.Error:
            return False
        return rows != [("ok",)]

    # ------------------------------------------------------------------ the API
    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached results for those texts that have one (one query per few hundred texts)."""
        keys = {cache_key(namespace, t): t for t in texts}
        key_list = list(keys)

        def select(conn: sqlite3.Connection) -> list[tuple[str, bytes, float | None]]:
            rows: list[tuple[str, bytes, float | None]] = []
            for start in range(0, len(key_list), _CHUNK):
                part = key_list[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                rows += conn.execute(f'SELECT key, value, used FROM "{TABLE}" WHERE key IN ({marks})', part).fetchall()
            return rows

        rows = (self._run("read", select) if key_list else None) or []
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
                    self._stale.add(key)  # the janitor deletes it (unless a fresh result replaces it first)
                continue
            found[keys[key]] = result
            if bounded and (not is_number(used) or now - used > TOUCH_AFTER_S) and len(self._touch) < 100_000:
                self._touch[key] = now  # recorded by the janitor, off the lookup's path
        with self._counter_lock:
            self.corrupt += bad
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, namespace: str, results: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store (text, result) pairs in one transaction; returns how many were written (0 on failure)."""
        now = time.time()
        rows = [(cache_key(namespace, text), _encode({"r": result, "t": now}), now) for text, result in results]
        if not rows:
            return 0

        # What the rows take in the file: key, value, their index entries and page overhead.
        need = sum(2 * len(key) + len(blob) + 48 for key, blob, _ in rows) if self.max_size is not None else 0
        parts = [rows]
        if self.max_size is not None and need > _wal_allowance(self.max_size) // 16:
            # The -wal holds a transaction whole: under a small bound, several small ones.
            per = max(1, len(rows) * (_wal_allowance(self.max_size) // 16) // need)
            parts = [rows[i : i + per] for i in range(0, len(rows), per)]

        def write(conn: sqlite3.Connection) -> int:
            if self.max_size is not None:
                used = _used_bytes(conn)
                if used + need > self._budget():
                    # The janitor fell behind (or has not started): make room here, so the bound holds.
                    while self._evict_batch(conn, used, need) and (used := _used_bytes(conn)) + need > self._budget():
                        pass
                    self._checkpoint(conn)
            for part in parts:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(f'REPLACE INTO "{TABLE}" (key, value, used) VALUES (?, ?, ?)', part)
                conn.execute("COMMIT")
                if self.max_size is not None:
                    self._checkpoint(conn)
            if self.max_size is not None:
                if _used_bytes(conn) > self._budget() * HIGH_WATER or len(self._touch) > 10_000:
                    self._wake.set()
            return len(rows)

        written = self._run("write", write) or 0
        if self.max_size is not None or self.ttl is not None:
            self._start_janitor()
        return written

    # ------------------------------------------------------------------ the bound (--cache-max-size)
    def _budget(self) -> int:
        """What the database file itself may use: the bound less the -wal's and -shm's share."""
        assert self.max_size is not None
        # The -wal holds each transaction whole, however it is checkpointed: the largest one seen counts.
        wal = max(_wal_allowance(self.max_size), self._wal_peak + self._wal_peak // 8)
        return max(self.max_size - wal - 32 * 1024, self.max_size // 4)

    def _start_janitor(self) -> None:
        if self._janitor is None and not self.strict and not self._stopping:
            self._janitor = threading.Thread(target=self._janitor_loop, name="sentictl-cache-janitor", daemon=True)
            self._janitor.start()

    def _janitor_loop(self) -> None:
        while not self._stopping:
            self._wake.wait(JANITOR_EVERY_S)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.maintain()
            except Exception:  # noqa: BLE001 - a janitor that dies would let the file grow unseen
                time.sleep(JANITOR_EVERY_S)

    def maintain(self) -> None:
        """One janitor pass: record hits' last use, delete expired entries, evict past the bound."""
        touch, self._touch = self._touch, {}
        stale, self._stale = self._stale, set()
        if touch:
            pairs = [(used, key) for key, used in touch.items()]

            def record(conn: sqlite3.Connection) -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    f'UPDATE "{TABLE}" SET used = ? WHERE key = ? AND (used IS NULL OR used < ?)',
                    [(used, key, used) for used, key in pairs],
                )
                conn.execute("COMMIT")

            self._run("write", record)
        if self.ttl is not None:
            cutoff = time.time() - self.ttl
            if stale:
                keys = list(stale)
                for start in range(0, len(keys), _CHUNK):
                    part = keys[start : start + _CHUNK]
                    self.expired += self._run("write", lambda conn, part=part: _delete_expired(conn, part, cutoff)) or 0
            if time.monotonic() - self._swept > SWEEP_EVERY_S:
                self._swept = time.monotonic()
                # used >= stored time, so used older than the TTL is surely expired (a hit since then
                # is deleted when a lookup meets it, above).
                for _ in range(10_000):
                    n = self._run("write", lambda conn: _delete_where(conn, "used < ?", (cutoff,))) or 0
                    self.expired += n
                    if n < _EVICT_BATCH:
                        break
        if self.max_size is not None:
            for _ in range(10_000):
                if not self._run("write", lambda conn: self._evict_batch(conn, _used_bytes(conn))):
                    break
            self._run("write", self._checkpoint)
            self._run("write", self._shrink)

    def _shrink(self, conn: sqlite3.Connection) -> None:
        """A file larger than its budget with free pages (the bound was lowered): hand them back."""
        pages, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        if free and pages * size > self._budget():
            conn.execute(f"PRAGMA incremental_vacuum({free})").fetchall()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Past half its allowance, copy the -wal into the file and truncate it, unless a reader is in it."""
        assert self.max_size is not None
        try:
            wal = os.stat(self._file + "-wal").st_size
        except OSError:
            return
        self._wal_peak = max(self._wal_peak, wal)
        if wal <= _wal_allowance(self.max_size) // 4:
            return
        conn.execute("PRAGMA busy_timeout = 0")  # never wait for another process's reader here
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def _evict_batch(self, conn: sqlite3.Connection, used: int, need: int = 0) -> bool:
        """Past the high water, delete one batch of least recently used entries; whether more should go.

        Rows live in insertion order (rowid), and the oldest-used are mostly the oldest-inserted, so a
        batch frees whole pages, which later writes reuse before the file grows."""
        budget = self._budget() - need
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
        rows = conn.execute(f'SELECT COUNT(*) FROM "{TABLE}"').fetchone()[0]
        if not rows:
            return False
        excess = int(rows * (used - budget * LOW_WATER) / used) + 1
        # Small transactions: the -wal holds each one whole, and it counts against the bound.
        n = _delete_where(conn, "1", (), min(excess, _EVICT_BATCH, max(50, rows // 10)), order="used")
        self.evicted += n
        self._checkpoint(conn)
        if used > budget:  # pages freed by earlier batches: hand them back (files made with auto_vacuum)
            conn.execute(f"PRAGMA incremental_vacuum({max(1, (used - budget) // 4096)})")
        return n > 0

    def stats(self) -> dict[str, Any]:
        """Entries, size on disk, and this process's hit/miss counters."""
        entries = self._run("read", lambda conn: conn.execute(f'SELECT COUNT(*) FROM "{TABLE}"').fetchone()[0])
        real = Path(self._file)
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
                    key for key, blob in conn.execute(f'SELECT key, value FROM "{TABLE}"') if _expired(blob, cutoff)
                ]
                for start in range(0, len(stale), _CHUNK):
                    part = stale[start : start + _CHUNK]
                    conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(part))})', part)
                removed = len(stale)
            else:
                removed = conn.execute(f'DELETE FROM "{TABLE}"').rowcount
            conn.execute("COMMIT")
            return removed

        return self._run("write", delete) or 0

    def close(self) -> None:
        """Close the connections (SQLite checkpoints the WAL when the last one closes)."""
        if self._janitor is not None or self._touch or self._stale:
            self._stopping = True
            self._wake.set()
            if self._janitor is not None:
                self._janitor.join(timeout=self.busy_timeout)
            try:
                self.maintain()  # this process's last hits and expired entries, before it goes
            except Exception:  # noqa: BLE001 - closing never fails over the cache
                pass
        self._closed = True
        self._wake.set()
        for slot in self._slots.values():
            if slot.lock.acquire(timeout=self.busy_timeout):
                try:
                    self._drop(slot)
                finally:
                    slot.lock.release()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wal_allowance(max_size: int) -> int:
    """How much of the bound the -wal may take: a quarter, between 256 KiB and 16 MiB."""
    return min(16 << 20, max(256 << 10, max_size // 4))


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file's pages in use (free pages are reused before the file grows)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


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


def _delete_where(
    conn: sqlite3.Connection, where: str, params: tuple, limit: int = _EVICT_BATCH, order: str | None = None
) -> int:
    """Delete up to limit rows matching where (the first by order) in one transaction; how many."""
    by = f" ORDER BY {order}" if order else ""
    conn.execute("BEGIN IMMEDIATE")
    n = conn.execute(
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
        if _expired(blob, cutoff)
    ]
    if stale:
        conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(stale))})', stale)
    conn.execute("COMMIT")
    return len(stale)


def _expired(blob: bytes, cutoff: float) -> bool:
    try:
        return _decode(blob)["t"] < cutoff
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return True  # unreadable entries are garbage either way


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
    location: str | os.PathLike,
    ttl: float | None = None,
    *,
    strict: bool = False,
    password: str | None = None,
    max_size: int | str | None = "default",
    on_failure: Callable[[str], None] | None = None,
):
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
