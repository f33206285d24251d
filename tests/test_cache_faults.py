"""The cache can fail; the work cannot: full disks, damaged files, odd locations and odd rows.

Real processes on real files. A full disk is a file-size limit (RLIMIT_FSIZE) on the process:
SQLite's writes past it fail with EFBIG exactly as they would with ENOSPC (Python ignores SIGXFSZ),
while stdout, a pipe, is unaffected.
"""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
import threading

import httpx
import orjson
import pytest

from conftest import free_port, run_sentictl, sentictl_env
from sentictl.engine.cache import TABLE, ResultCache, cache_key
from test_serve import Server

# Big enough for the file's first pages and its 32 KiB -shm index, too small for a batch of results.
FULL_AT = 64 * 1024


def lines(n: int, tag: str = "x") -> bytes:
    return b"".join(
        f"Company {tag}{i} reported a quarterly profit and raised its dividend\n".encode() for i in range(n)
    )


def seeded_cache(path) -> None:
    """A real cache file with one entry, made before any limit applies."""
    with ResultCache(path, strict=True) as cache:
        cache.put_many("seed", [("seed", {"label": "neutral", "score": 1.0, "scores": {"neutral": 1.0}, "model": "m"})])


def limited(fsize: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def score(tiny_model_dir, cache, data: bytes, env=None, preexec=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "--model-dir", str(tiny_model_dir), "--cache", str(cache)],
        input=data,
        capture_output=True,
        env=env or sentictl_env(),
        preexec_fn=preexec,
        timeout=timeout,
    )


def results(stdout: bytes) -> list[dict]:
    return [orjson.loads(line) for line in stdout.splitlines()]


def test_score_on_a_full_disk_classifies_everything(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache.sqlite"
    seeded_cache(cache)
    n = 1200  # more than two of score's 512-line chunks: the run must not stop after the first
    run = score(tiny_model_dir, cache, lines(n), preexec=limited(FULL_AT))
    err = run.stderr.decode()
    assert run.returncode == 0, err
    got = results(run.stdout)
    assert len(got) == n and all(r["label"] for r in got)
    assert "Traceback" not in err
    assert err.count("cannot be written") == 1, err  # said once, not once per batch
    assert f"{n} texts scored" in err


def test_serve_on_a_full_disk_answers_and_stops_on_sigterm(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache.sqlite"
    seeded_cache(cache)

    class FullDiskServer(Server):
        def __init__(self, args):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentictl", "serve", "--port", str(self.port), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=sentictl_env(),
                preexec_fn=limited(FULL_AT),
            )
            self.client = httpx.Client(base_url=self.url, timeout=30)

    s = FullDiskServer(["--model-dir", str(tiny_model_dir), "--cache", str(cache)]).wait_healthy()
    try:
        texts = [f"Bank {i} cut its outlook after losses widened in the quarter" for i in range(200)]
        for start in range(0, len(texts), 50):
            r = s.client.post("/sentiment", json={"texts": texts[start : start + 50]})
            assert r.status_code == 200, r.text
            assert len(r.json()) == 50
        assert s.client.get("/health").status_code == 200
        metrics = s.metrics()
        assert metrics['sentictl_cache_failures_total{op="write"}'] >= 1
    finally:
        code, err = s.stop(timeout=30)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_damaged_cache_costs_a_warning_and_misses(tiny_model_dir, tmp_path, damage):
    cache = tmp_path / "cache.sqlite"
    first = score(tiny_model_dir, cache, lines(2000, "a"))
    assert first.returncode == 0, first.stderr.decode()
    size = cache.stat().st_size
    if damage == "garbage":
        cache.write_bytes(b"this is not a database, just text that took its place\n" * 200)
    else:
        with open(cache, "r+b") as fh:
            fh.truncate(size // 2)
    run = score(tiny_model_dir, cache, lines(40, "a"))
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert len(results(run.stdout)) == 40
    assert "Traceback" not in err
    moved = sorted(tmp_path.glob("cache.sqlite.corrupt-*"))
    if damage == "garbage":
        assert "is damaged" in err and "moved it to" in err
        assert moved
    # Whether or not SQLite met the missing pages, the cache works afterwards.
    again = score(tiny_model_dir, cache, lines(40, "a"))
    assert again.returncode == 0 and "Traceback" not in again.stderr.decode()
    assert all(r["cache_hit"] for r in results(again.stdout))


def test_cache_clear_rebuilds_a_damaged_file(tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"\x00garbage" * 1000)
    run = run_sentictl("cache", "clear", "--cache", str(cache))
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert "moved it to" in err and "Traceback" not in err
    stats = run_sentictl("cache", "stats", "--cache", str(cache))
    assert stats.returncode == 0 and orjson.loads(stats.stdout)["entries"] == 0


def test_two_processes_rotate_a_damaged_file_once(tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"garbage " * 4096)
    code = (
        "import sys; from sentictl.engine.cache import ResultCache; c = ResultCache(sys.argv[1]); "
        "r = {'label': 'neutral', 'score': 1.0, 'scores': {'neutral': 1.0}, 'model': 'm'}; "
        "assert c.put_many('ns', [(sys.argv[2], r)]) == 1; c.close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(cache), f"t{i}"], stderr=subprocess.PIPE) for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    # One rotation (the second process found the fresh file, or the inode changed under the lock),
    # and neither process's entry went into a file that was then moved away.
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1
    with ResultCache(cache) as c:
        assert set(c.get_many("ns", ["t0", "t1"])) == {"t0", "t1"}


def test_uncreatable_cache_runs_uncached_with_a_warning(tiny_model_dir):
    run = run_sentictl(
        "score",
        "--model-dir",
        str(tiny_model_dir),
        input=lines(10),
        env=sentictl_env(SENTICTL_CACHE="/proc/sentictl-nope/cache.db"),
    )
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert len(results(run.stdout)) == 10
    assert "/proc/sentictl-nope/cache.db" in err and "going on without it" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "row",
    [
        {"r": {}, "t": 0},
        {"r": {"label": "positive"}, "t": 0},
        {"r": {"label": "positive", "score": "high", "scores": {}, "model": "m"}, "t": 0},
        {"r": {"label": "nope", "score": 0.5, "scores": {"positive": 0.5}, "model": "m"}, "t": 0},
        {"r": [1, 2, 3], "t": 0},
        {"x": 1},
        "just a string",
    ],
)
def test_a_row_of_the_wrong_shape_is_a_miss_and_is_overwritten(tiny_model_dir, tmp_path, row):
    cache = tmp_path / "cache.sqlite"
    text = "Net income rose 12% on higher fees"
    first = score(tiny_model_dir, cache, f"{text}\n".encode())
    assert first.returncode == 0
    good = results(first.stdout)[0]
    # Plant the odd row under the very key the model uses for this text.
    conn = sqlite3.connect(cache)
    (key,) = conn.execute(f'SELECT key FROM "{TABLE}"').fetchone()
    conn.execute(f'UPDATE "{TABLE}" SET value = ? WHERE key = ?', (orjson.dumps(row), key))
    conn.commit()
    conn.close()
    second = score(tiny_model_dir, cache, f"{text}\n".encode())
    assert second.returncode == 0 and "Traceback" not in second.stderr.decode()
    got = results(second.stdout)[0]
    assert got["cache_hit"] is False and got["label"] == good["label"] and got["scores"] == good["scores"]
    third = results(score(tiny_model_dir, cache, f"{text}\n".encode()).stdout)[0]
    assert third["cache_hit"] is True and third["label"] == good["label"]


def test_sqlitedict_still_reads_the_file(tmp_path):
    from sqlitedict import SqliteDict

    path = tmp_path / "cache.sqlite"
    value = {"label": "negative", "score": 0.9, "scores": {"negative": 0.9, "neutral": 0.1}, "model": "m"}
    with ResultCache(path) as cache:
        cache.put_many("ns", [("text", value)])
    # journal_mode="WAL": sqlitedict's default (DELETE) would try to switch the file out of WAL.
    db = SqliteDict(str(path), tablename=TABLE, flag="r", decode=orjson.loads, journal_mode="WAL")
    try:
        assert db[cache_key("ns", "text")]["r"] == value
    finally:
        db.close()


def test_a_lock_held_past_the_busy_timeout_is_a_miss_not_a_hang(tmp_path):
    path = tmp_path / "cache.sqlite"
    value = {"label": "neutral", "score": 1.0, "scores": {"neutral": 1.0}, "model": "m"}
    with ResultCache(path) as warm:
        warm.put_many("ns", [("a", value)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock indefinitely
    try:
        done = threading.Event()
        outcome = {}

        def write() -> None:
            with ResultCache(path, busy_timeout=0.2) as cache:
                outcome["written"] = cache.put_many("ns", [("b", value)])
                outcome["failures"] = cache.failures
            done.set()

        t = threading.Thread(target=write, daemon=True)
        t.start()
        assert done.wait(60), "a held lock must not block the cache for ever"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outcome == {"written": 0, "failures": 1}
