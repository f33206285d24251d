"""The Redis result cache against a real redis-server: shared by every door and process, the same
keys and values as the SQLite cache, and a fault (down, slow, full, restarted) costs misses, never
a text or an exit status. The password never shows.

Each test starts its own redis-server (Debian's package; .ci/run installs it) on a free loopback
port with persistence off. Outside CI a machine without redis-server skips these tests; in CI
(CI=true) that is a failure, so they never skip silently there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import free_port, run_sentictl, sentictl_env, wait_for_port
from sentictl.engine.cache import ResultCache, cache_key, open_cache
from sentictl.engine.rediscache import PREFIX, RedisCache, is_url, redact_url

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_SERVER = shutil.which("redis-server")


def _require(what: str, ok: bool) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing: in CI the Redis tests must run (.ci/run installs redis-server)")
    pytest.skip(f"{what} is not installed (in CI this fails)")


try:
    import redis
except ImportError:  # pragma: no cover - the test extra installs it
    redis = None


RESULT = {
    "text": "t",
    "label": "neutral",
    "score": 1.0,
    "scores": {"positive": 0.0, "negative": 0.0, "neutral": 1.0},
    "model": "m",
}


class RedisServer:
    """A redis-server process on a loopback port; kill() and start() again on the same port."""

    def __init__(self, workdir: Path, *extra: str):
        self.port = free_port()
        self.workdir = workdir
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.password = None
        if "--requirepass" in extra:
            self.password = extra[extra.index("--requirepass") + 1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, proc=self.proc)
        deadline = time.monotonic() + 20
        while True:  # listening is not loaded: PING until it answers, with a deadline
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.BusyLoadingError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def keys(self) -> list[bytes]:
        return sorted(self.client().scan_iter(match=f"{PREFIX}*", count=1000))


@pytest.fixture
def model_dir() -> Path:
    """The bundled small model: these tests are about the cache, and it loads in a blink."""
    from sentictl.config import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture
def redis_server(tmp_path):
    _require("redis-server", REDIS_SERVER is not None)
    _require("redis-py (pip install 'sentictl[redis]')", redis is not None)
    servers: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path, *extra).start()
        servers.append(server)
        return server

    make.servers = servers
    yield make
    for server in servers:
        server.kill()


def lines(n: int, tag: str = "x") -> bytes:
    return b"".join(
        f"Company {tag}{i} reported a quarterly profit and raised its dividend\n".encode() for i in range(n)
    )


def score(model_dir, url: str, data: bytes, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_sentictl("score", "--model-dir", str(model_dir), "--cache", url, *args, input=data, env=env)


def results(stdout: bytes) -> list[dict]:
    return [orjson.loads(line) for line in stdout.splitlines()]


# ---------------------------------------------------------------------------- in-process


def test_urls_are_told_from_paths_and_printed_without_their_password():
    assert is_url("redis://h:6379/0") and is_url("rediss://h/0") and is_url("unix:///run/redis.sock")
    assert not is_url("/tmp/cache.sqlite") and not is_url("redis.sqlite")
    assert redact_url("redis://user:pa55@h:6379/2") == "redis://user:***@h:6379/2"
    assert redact_url("redis://:pa55@h:6379/2") == "redis://:***@h:6379/2"
    assert redact_url("rediss://pa55@h/0") == "rediss://***@h/0"
    assert "pa55" not in redact_url("unix:///run/redis.sock?db=1&password=pa55")
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("/tmp/x.sqlite") == "/tmp/x.sqlite"


def test_same_keys_and_values_as_the_sqlite_cache_and_never_pickle(redis_server, tmp_path):
    server = redis_server()
    ns = "fp123:truncate"
    with open_cache(server.url) as cache, open_cache(tmp_path / "c.sqlite") as local:
        assert isinstance(cache, RedisCache) and isinstance(local, ResultCache)
        assert cache.put_many(ns, [("hello", RESULT), ("world", RESULT)]) == 2
        assert cache.get_many(ns, ["hello", "world", "other"]) == {"hello": RESULT, "world": RESULT}
        assert (cache.hits, cache.misses) == (2, 1)
        assert cache.get_many("another-model:truncate", ["hello"]) == {}  # a namespace of its own
        local.put_many(ns, [("hello", RESULT)])
    key = f"{PREFIX}{ns}:{cache_key(ns, 'hello')}"
    client = server.client()
    doc = orjson.loads(client.get(key))
    assert doc["r"] == RESULT and isinstance(doc["t"], float) and set(doc) == {"r", "t"}
    assert client.ttl(key) == -1  # no --cache-ttl: kept until Redis evicts it
    # A planted pickle (or anything not ours) is a counted miss, never unpickled.
    import pickle

    client.set(key, pickle.dumps({"r": RESULT, "t": time.time()}))
    with open_cache(server.url) as cache:
        assert cache.get_many(ns, ["hello"]) == {} and cache.corrupt == 1


def test_a_ttl_expires_entries_in_redis_and_ignores_older_ones(redis_server):
    server = redis_server()
    with open_cache(server.url, ttl=3600) as cache:
        cache.put_many("ns", [("a", RESULT)])
    key = f"{PREFIX}ns:{cache_key('ns', 'a')}"
    assert 3590 < server.client().ttl(key) <= 3600
    server.client().set(key, orjson.dumps({"r": RESULT, "t": time.time() - 7200}))  # written by a TTL-less peer
    with open_cache(server.url, ttl=3600) as cache:
        assert cache.get_many("ns", ["a"]) == {}
        assert cache.clear(expired_only=True) == 1


def test_a_silent_server_costs_one_bounded_wait_then_backs_off():
    # Accepts connections (the kernel's backlog) and never answers: the slowest Redis there is.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        failures: list[str] = []
        started = time.monotonic()
        cache = RedisCache(url, on_failure=failures.append)  # the opening PING times out
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        assert cache.get_many("ns", ["a", "b"]) == {}  # backing off: answered at once
        assert cache.put_many("ns", [("a", RESULT)]) <= 1
        assert time.monotonic() - started < 0.5
        assert failures[0] == "read" and cache.misses == 2
        cache.close()


def test_strict_opening_of_an_unreachable_redis_is_an_error():
    from sentictl.errors import CacheError

    with pytest.raises(CacheError, match="cannot be used"):
        open_cache(f"redis://:hunter2@127.0.0.1:{free_port()}/0", strict=True)


# ---------------------------------------------------------------------------- real processes


def test_score_twice_on_one_url_is_all_hits_the_second_time(model_dir, redis_server):
    server = redis_server()
    data = lines(300)
    first = score(model_dir, server.url, data)
    assert first.returncode == 0, first.stderr.decode()
    assert not any(r["cache_hit"] for r in results(first.stdout))
    second = score(model_dir, server.url, data)
    assert second.returncode == 0, second.stderr.decode()
    got = results(second.stdout)
    assert len(got) == 300 and all(r["cache_hit"] for r in got)
    assert [r["label"] for r in got] == [r["label"] for r in results(first.stdout)]
    assert len(server.keys()) == 300


def test_cache_stats_and_clear_touch_only_sentictls_keys(model_dir, redis_server):
    server = redis_server()
    server.client().set("someone-elses:key", b"keep me")
    assert score(model_dir, server.url, lines(40)).returncode == 0
    env = sentictl_env(SENTICTL_CACHE=server.url)
    stats = run_sentictl("cache", "stats", env=env)
    assert stats.returncode == 0, stats.stderr.decode()
    doc = orjson.loads(stats.stdout)
    assert doc["entries"] == 40 and doc["bytes"] > 0 and doc["path"] == server.url
    cleared = run_sentictl("cache", "clear", env=env)
    assert cleared.returncode == 0 and b"removed 40 cached results" in cleared.stderr
    assert server.keys() == [] and server.client().get("someone-elses:key") == b"keep me"
    server.kill()
    down = run_sentictl("cache", "stats", env=env)
    assert down.returncode == 1 and b"cannot be used" in down.stderr and b"Traceback" not in down.stderr


def test_every_door_gives_the_same_verdict_on_a_redis_cache(model_dir, kafka_bootstrap, redis_server):
    import test_doors as doors

    server = redis_server()
    values = [raw for _, raw, _ in doors.CASES]
    by_score = [doors.verdict_score(model_dir, server.url, raw) for raw in values]
    door = doors.ServeDoor(model_dir, server.url)
    try:
        by_serve = [door.verdict(raw) for raw in values]
    finally:
        door.close()
    by_bridge = doors.bridge_verdicts(kafka_bootstrap, model_dir, server.url, values)
    seen: set[str] = set()
    for (case, _, expected), s, h, b in zip(doors.CASES, by_score, by_serve, by_bridge):
        for door_name, got in (("score", s), ("serve", h), ("bridge", b)):
            if expected in doors.ACCEPTED:
                assert got.get("text") == expected, (case, door_name, got)
            else:
                assert got == {"reason": expected}, (case, door_name, got)
        if expected in doors.ACCEPTED:
            assert s["cache_hit"] is (expected in seen), (case, s)
            seen.add(expected)
            # serve and bridge came later, in other processes: hits for what score stored
            assert h["cache_hit"] is True and b["cache_hit"] is True, (case, h, b)
    assert len(server.keys()) == len(doors.ACCEPTED), "one entry per distinct normalised text"


def _serve(model_dir, url: str | None = None, env: dict | None = None, *args: str):
    from test_serve import Server

    cache = ["--cache", url] if url else []
    return Server(["--model-dir", str(model_dir), *cache, *args], env=env).wait_healthy()


def _post(server, text: str) -> dict:
    r = server.client.post("/sentiment", json={"text": text})
    assert r.status_code == 200, r.text
    return r.json()


def test_two_serve_replicas_share_one_redis(model_dir, redis_server):
    server = redis_server()
    a, b = _serve(model_dir, server.url), _serve(model_dir, server.url)
    try:
        text = f"Replica test {uuid.uuid4().hex}: the bank beat estimates"
        assert _post(a, text)["metadata"]["cache_hit"] is False
        assert _post(b, text)["metadata"]["cache_hit"] is True
        assert b.metrics()["sentictl_cache_hits_total"] >= 1
    finally:
        for s in (a, b):
            code, err = s.stop()
            assert code == 0 and "Traceback" not in err, err


def test_redis_killed_mid_score_every_text_classified(model_dir, redis_server):
    server = redis_server()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentictl", "score", "--model-dir", str(model_dir), "--cache", server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sentictl_env(),
    )
    data = lines(2000)
    half = data.count(b"\n") // 2
    first, rest = b"".join(data.splitlines(True)[:half]), b"".join(data.splitlines(True)[half:])
    out: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("out", "err"), (proc.stdout.read(), proc.stderr.read()))))
    reader.start()
    proc.stdin.write(first)
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while len(server.keys()) < 512:  # score has stored its first chunk: it is mid-run
        assert proc.poll() is None and time.monotonic() < deadline, "score never stored its first chunk"
        time.sleep(0.02)
    server.kill()
    proc.stdin.write(rest)
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    reader.join(timeout=30)
    err = out["err"].decode()
    got = results(out["out"])
    assert len(got) == 2000 and all(r["label"] for r in got), err
    assert err.count("cannot be") == 1 and "Traceback" not in err, err
    assert "2,000 texts scored" in err or "2000 texts scored" in err, err


def test_redis_killed_under_a_loaded_serve_every_request_answered(model_dir, redis_server):
    server = redis_server()
    s = _serve(model_dir, server.url)
    statuses: list[int] = []
    answered = threading.Semaphore(0)

    def client(worker: int) -> None:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for i in range(60):
                r = c.post("/sentiment", json={"text": f"Load {worker}-{i % 20}: shares fell after the profit warning"})
                statuses.append(r.status_code)
                answered.release()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    try:
        for t in threads:
            t.start()
        for _ in range(60):  # a sixth of the load answered: kill Redis under it
            assert answered.acquire(timeout=60)
        server.kill()
        for t in threads:
            t.join(timeout=120)
        assert len(statuses) == 360 and set(statuses) == {200}
        metrics = s.metrics()
        assert (
            metrics['sentictl_cache_failures_total{op="read"}'] + metrics['sentictl_cache_failures_total{op="write"}']
            >= 1
        ), metrics
    finally:
        code, err = s.stop()
    assert code == 0 and "Traceback" not in err, err
    assert err.count("cannot be") == 1, err


def test_hits_resume_after_a_redis_restart_without_restarting_serve(model_dir, redis_server):
    server = redis_server()
    s = _serve(model_dir, server.url)
    try:
        assert _post(s, "Before the restart, earnings rose")["metadata"]["cache_hit"] is False
        server.kill()
        assert _post(s, "While Redis is down, earnings rose")["metadata"]["cache_hit"] is False
        server.start()  # the same port, empty (no persistence)
        text = "After the restart, earnings rose"
        deadline = time.monotonic() + 60
        while not _post(s, text)["metadata"]["cache_hit"]:  # stored once the back-off lets it try again
            assert time.monotonic() < deadline, "no cache hit after Redis came back"
            time.sleep(0.1)
        assert len(server.keys()) >= 1
    finally:
        code, err = s.stop()
    assert code == 0 and "works again" in err, err


def test_a_full_redis_costs_misses_not_errors(model_dir, redis_server):
    server = redis_server("--maxmemory-policy", "noeviction")
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used + 256 * 1024))
    pipe = client.pipeline(transaction=False)
    with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
        for i in range(10_000):
            pipe.set(f"filler:{i}", b"x" * 1024)
            if i % 100 == 99:
                pipe.execute()
    run = score(model_dir, server.url, lines(200))
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert len(results(run.stdout)) == 200
    assert err.count("cannot be written") == 1 and "maxmemory" in err and "Traceback" not in err, err
    again = score(model_dir, server.url, lines(200))
    assert again.returncode == 0 and not any(r["cache_hit"] for r in results(again.stdout))


def test_the_password_never_shows(model_dir, redis_server, tmp_path):
    secret = f"pw-{uuid.uuid4().hex}"
    server = redis_server("--requirepass", secret)
    url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
    # score with the password in a file: nothing in argv, nothing in the environment
    pw_file = tmp_path / "redis.pw"
    pw_file.write_text(secret + "\n")
    run = score(model_dir, server.url, lines(20), "--cache-password-file", str(pw_file))
    assert run.returncode == 0 and secret.encode() not in run.stderr, run.stderr.decode()
    assert len(server.keys()) == 20, run.stderr.decode()
    # serve with the URL in SENTICTL_CACHE; then Redis fails, so error messages are written too
    s = _serve(model_dir, None, sentictl_env(SENTICTL_CACHE=url))
    try:
        cmdline = Path(f"/proc/{s.proc.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        assert _post(s, "Company x1 reported a quarterly profit and raised its dividend")["metadata"]["cache_hit"]
        info = s.client.get("/info").text
        server.kill()
        _post(s, "A text nobody scored yet, after Redis died")
        metrics = s.client.get("/metrics").text
    finally:
        code, err = s.stop()
    for where, text in (("/info", info), ("/metrics", metrics), ("stderr", err)):
        assert secret not in text, where
    assert "cannot be" in err and ":***@" in err, err
    stats = run_sentictl("cache", "stats", env=sentictl_env(SENTICTL_CACHE=url))
    assert stats.returncode == 1 and secret.encode() not in stats.stderr + stats.stdout
    # typed into --cache it works, with a notice that ps shows it
    server.start()
    typed = score(model_dir, url, lines(3))
    assert typed.returncode == 0 and b"ps" in typed.stderr
    assert secret.encode() not in typed.stderr


def test_score_refuses_nothing_for_a_redis_url_output_checks(model_dir, redis_server, tmp_path):
    """A URL is no file: score's output-vs-cache check must not treat it as one."""
    server = redis_server()
    errors = tmp_path / "errors.jsonl"
    run = score(model_dir, server.url, lines(5), "--errors", str(errors))
    assert run.returncode == 0, run.stderr.decode()
    assert not any(Path.cwd().glob("redis:*"))


def test_sentictl_info_shows_the_redis_url_redacted(model_dir):
    secret, port = f"pw-{uuid.uuid4().hex}", free_port()
    run = run_sentictl(
        "info",
        "--model-dir",
        str(model_dir),
        env=sentictl_env(SENTICTL_CACHE=f"redis://app:{secret}@127.0.0.1:{port}/3"),
    )
    assert run.returncode == 0, run.stderr.decode()
    assert orjson.loads(run.stdout)["cache"] == f"redis://app:***@127.0.0.1:{port}/3"
    assert secret.encode() not in run.stdout + run.stderr


def test_the_python_api_shares_a_redis_url_with_the_cli_and_pickles_it(model_dir, redis_server):
    import pickle

    import sentictl

    server = redis_server()
    first = score(model_dir, server.url, lines(20))
    assert first.returncode == 0, first.stderr.decode()
    clf = sentictl.load(str(model_dir), cache=server.url, threads=1)
    texts = [line.decode() for line in lines(20).splitlines()]
    assert all(r.cache_hit for r in clf.classify(texts))
    worker = pickle.loads(pickle.dumps(clf))  # what a Ray actor or a pool worker receives
    assert all(r.cache_hit for r in worker.classify(texts[:5]))
