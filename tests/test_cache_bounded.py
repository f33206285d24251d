"""The bounded local cache (--cache-max-size): the file and its -wal/-shm stay under the bound while
distinct texts keep coming, the least recently used entries go first, --cache-ttl entries are
deleted, and every process can read the file throughout. Real SQLite files, real processes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from conftest import run_sentictl, sentictl_env
from sentictl.engine import cache as cache_mod
from sentictl.engine.cache import TABLE, ResultCache, cache_key, open_cache, parse_size

RESULT = {
    "text": "t" * 80,
    "label": "neutral",
    "score": 1.0,
    "scores": {"positive": 0.0, "negative": 0.0, "neutral": 1.0},
    "model": "m",
}


def on_disk(path: Path) -> int:
    """The cache's bytes on disk: the file and its -wal/-shm."""
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal", "-shm") if os.path.exists(f"{path}{s}"))


def rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f'SELECT COUNT(*) FROM "{TABLE}"').fetchone()[0]
    finally:
        conn.close()


def test_sizes_read_as_bytes_or_with_a_suffix():
    assert parse_size("1048576") == 1 << 20
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30 and parse_size("64k") == 64 << 10
    assert parse_size("1.5G") == int(1.5 * (1 << 30)) and parse_size("2GiB") == 2 << 30
    assert parse_size("0") is None and parse_size(None) is None
    for bad in ("lots", "-1M", "1Q", ""):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_default_bound_is_1g_and_the_environment_sets_another(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTICTL_CACHE_MAX_SIZE", raising=False)
    with open_cache(tmp_path / "a.sqlite") as c:
        assert c.max_size == 1 << 30
    monkeypatch.setenv("SENTICTL_CACHE_MAX_SIZE", "300M")
    with open_cache(tmp_path / "b.sqlite") as c:
        assert c.max_size == 300 << 20
    with open_cache(tmp_path / "c.sqlite", max_size=0) as c:
        assert c.max_size is None


def test_the_file_stays_under_the_bound_while_distinct_texts_keep_coming(tmp_path):
    path = tmp_path / "cache.sqlite"
    bound = 1 << 20
    peak = 0
    with ResultCache(path, max_size=bound) as cache:
        for batch in range(60):
            assert cache.put_many("ns", [(f"text {batch}-{i}", RESULT) for i in range(500)]) == 500
            peak = max(peak, on_disk(path))
        assert cache.evicted > 0 and cache.failures == 0
        # the newest entries are there; the oldest went
        assert len(cache.get_many("ns", [f"text 59-{i}" for i in range(500)])) == 500
        assert cache.get_many("ns", ["text 0-0"]) == {}
    assert peak <= bound, peak
    assert on_disk(path) <= bound


def test_least_recently_used_entries_go_first(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "TOUCH_AFTER_S", 0.0)  # every hit refreshes (the default: once a minute)
    path = tmp_path / "cache.sqlite"
    with ResultCache(path, max_size=512 << 10) as cache:
        cache.put_many("ns", [("kept", RESULT), ("dropped", RESULT)])
        for batch in range(40):
            assert "kept" in cache.get_many("ns", ["kept"])  # used all along
            cache.maintain()  # the janitor's pass, run here rather than waiting for its thread
            cache.put_many("ns", [(f"filler {batch}-{i}", RESULT) for i in range(300)])
        assert cache.evicted > 0
        assert "kept" in cache.get_many("ns", ["kept"]) and cache.get_many("ns", ["dropped"]) == {}


def test_expired_entries_are_deleted_not_only_ignored(tmp_path):
    path = tmp_path / "cache.sqlite"
    with ResultCache(path, max_size=1 << 30) as cache:
        cache.put_many("ns", [(f"old {i}", RESULT) for i in range(50)] + [("fresh", RESULT)])
    long_ago = time.time() - 7200
    conn = sqlite3.connect(path, isolation_level=None)
    old = [cache_key("ns", f"old {i}") for i in range(50)]
    for key in old[:40]:  # stored and last used two hours ago
        conn.execute(
            f'UPDATE "{TABLE}" SET value = ?, used = ? WHERE key = ?',
            (orjson.dumps({"r": RESULT, "t": long_ago}), long_ago, key),
        )
    for key in old[40:]:  # stored two hours ago, but used a moment ago
        conn.execute(f'UPDATE "{TABLE}" SET value = ? WHERE key = ?', (orjson.dumps({"r": RESULT, "t": long_ago}), key))
    conn.close()
    with ResultCache(path, ttl=3600, max_size=1 << 30) as cache:
        assert cache.get_many("ns", [f"old {i}" for i in range(40, 50)]) == {}  # met by a lookup: stale
        cache.maintain()
        assert cache.expired == 50
    assert rows(path) == 1


def test_old_files_gain_the_last_use_column_and_stay_readable_by_sqlitedict(tmp_path):
    from sqlitedict import SqliteDict

    path = tmp_path / "cache.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f'CREATE TABLE "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)')  # sqlitedict's own layout
    conn.execute(
        f'INSERT INTO "{TABLE}" VALUES (?, ?)',
        (cache_key("ns", "legacy"), orjson.dumps({"r": RESULT, "t": time.time()})),
    )
    conn.close()
    with ResultCache(path, max_size=1 << 20) as cache:
        assert cache.get_many("ns", ["legacy"]) == {"legacy": RESULT}
        for batch in range(30):
            cache.put_many("ns", [(f"new {batch}-{i}", RESULT) for i in range(200)])
        assert cache.get_many("ns", ["legacy"]) == {}  # no last-use time: evicted first
    db = SqliteDict(str(path), tablename=TABLE, flag="r", decode=orjson.loads, journal_mode="WAL")
    try:
        assert db[cache_key("ns", "new 29-0")]["r"] == RESULT
    finally:
        db.close()


def test_other_processes_read_throughout_eviction(tmp_path):
    path = tmp_path / "cache.sqlite"
    with ResultCache(path, max_size=1 << 30) as seed:
        seed.put_many("ns", [("steady", RESULT)])
    stop = threading.Event()
    reads = {"n": 0, "failures": 0}

    def reader() -> None:
        with ResultCache(path, busy_timeout=1.0) as r:  # another cache user of the same file
            while not stop.is_set():
                r.get_many("ns", ["steady", "absent"])
                reads["n"] += 1
            reads["failures"] = r.failures

    t = threading.Thread(target=reader)
    t.start()
    try:
        with ResultCache(path, max_size=512 << 10, busy_timeout=1.0) as writer:
            for batch in range(40):
                writer.put_many("ns", [(f"churn {batch}-{i}", RESULT) for i in range(300)])
            assert writer.evicted > 0 and writer.failures == 0
    finally:
        stop.set()
        t.join(timeout=30)
    assert reads["n"] > 0 and reads["failures"] == 0


def test_score_keeps_the_file_under_the_bound(tmp_path):
    from sentictl.config import bundled_model_dir

    path = tmp_path / "cache.sqlite"
    bound = 1 << 20  # about 1,500 results: far fewer than go through
    n = 3000
    data = b"".join(f"Company {i} reported a quarterly profit and raised its dividend\n".encode() for i in range(n))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentictl",
            "score",
            "--model-dir",
            str(bundled_model_dir()),
            "--cache",
            str(path),
            "--cache-max-size",
            "1M",
            "-q",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sentictl_env(),
    )
    peak = [0]
    done = threading.Event()

    def watch() -> None:  # the size on disk while score runs, as often as it can be read
        while not done.is_set():
            try:
                peak[0] = max(peak[0], on_disk(path))
            except OSError:
                pass
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate(data, timeout=300)
    done.set()
    watcher.join()
    assert proc.returncode == 0, err.decode()
    assert len(out.splitlines()) == n
    assert 0 < rows(path) < n, "entries were evicted"
    assert peak[0] <= bound and on_disk(path) <= bound, (peak[0], bound)
    stats = run_sentictl("cache", "stats", "--cache", str(path))
    assert orjson.loads(stats.stdout)["bytes"] <= bound
