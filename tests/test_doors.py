"""One engine behind every door: the same input gets the same verdict, reason code and cache entry
through `score`, `serve` and `bridge` (real processes, a real broker, one cache file).

Each row of CASES is a value as a door receives it (a line of a file, an HTTP body, a Kafka
record value). The doors report in their own ways — score a result line or an error record (blank
lines only counted), serve a result or an error body with a `reason`, bridge an output record or
a DLQ record with a `sentictl-error` header — and this test reads each back to one verdict.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest

from conftest import free_port, sentictl_env, wait_for_port  # noqa: F401

kafka = pytest.importorskip("kafka")
from kafka.admin import NewTopic  # noqa: E402

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # noqa: E402

MAX_CHARS = 2000
PLAIN = "Profit rose sharply at the bank in the third quarter."
# Over the tiny model's 128-token limit, under MAX_CHARS: truncated (and flagged) at every door.
LONG = " ".join(["Revenue grew and the bank raised its dividend after strong quarterly results."] * 14)
assert len(LONG) < MAX_CHARS

# (case, bytes as received, expected verdict: the normalised text for a result, else the reason code)
CASES = [
    ("plain", PLAIN.encode(), PLAIN),
    ("lf", (PLAIN + "\n").encode(), PLAIN),
    ("crlf", (PLAIN + "\r\n").encode(), PLAIN),
    ("bom", ("\ufeff" + PLAIN).encode(), PLAIN),
    ("long", LONG.encode(), LONG),
    ("over_max_chars", ("x" * (MAX_CHARS + 500)).encode(), "too_long"),
    ("blank", b"", "empty"),
    ("whitespace", b"   \t  ", "empty"),
    ("nul", b"\x00\x00\x00", "empty"),
    ("invalid_utf8", b"\xff\xfe not utf-8", "invalid_utf8"),
]
ACCEPTED = {expected for _, _, expected in CASES if expected not in ("too_long", "empty", "invalid_utf8")}


def verdict_score(model_dir, cache, raw: bytes) -> dict:
    """score reads one line (the value plus a line end, unless it ends one already)."""
    line = raw if raw.endswith((b"\n", b"\r")) else raw + b"\n"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentictl",
            "score",
            "--model-dir",
            str(model_dir),
            "--cache",
            str(cache),
            "--max-chars",
            str(MAX_CHARS),
        ],
        input=line,
        capture_output=True,
        env=sentictl_env(),
        timeout=120,
    )
    assert b"Traceback" not in run.stderr, run.stderr.decode()
    if run.stdout.strip():
        r = orjson.loads(run.stdout)
        return {"text": r["text"], "cache_hit": r["cache_hit"], "truncated": bool(r.get("truncated"))}
    if b"1 empty skipped" in run.stderr:
        assert run.returncode == 0, "empty is counted, not a reason for a non-zero exit"
        return {"reason": "empty"}
    reports = [orjson.loads(x) for x in run.stderr.splitlines() if x.startswith(b"{")]
    assert run.returncode == 3 and len(reports) == 1, run.stderr.decode()
    return {"reason": reports[0]["reason"]}


class ServeDoor:
    def __init__(self, model_dir, cache):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sentictl",
                "serve",
                "--port",
                str(self.port),
                "--model-dir",
                str(model_dir),
                "--cache",
                str(cache),
                "--max-chars",
                str(MAX_CHARS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=sentictl_env(),
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(0.05)

    def verdict(self, raw: bytes) -> dict:
        r = self.client.post("/sentiment", content=raw, headers={"content-type": "text/plain"})
        body = r.json()
        if r.status_code == 200:
            return {
                "text": body["text"],
                "cache_hit": body["metadata"]["cache_hit"],
                "truncated": bool(body["metadata"].get("truncated")),
            }
        assert 400 <= r.status_code < 500 and {"error", "error_type", "reason"} <= set(body), body
        return {"reason": body["reason"]}

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.communicate(timeout=30)


def bridge_verdicts(bootstrap, model_dir, cache, values: list[bytes]) -> list[dict]:
    """Produce the values (keyed by index), run one bridge to the end, read outputs and DLQ back."""
    tag = uuid.uuid4().hex[:8]
    src, out, dlq = f"doors-in-{tag}", f"doors-out-{tag}", f"doors-dlq-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in (src, out, dlq)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, value in enumerate(values):
        producer.send(src, key=str(i).encode(), value=value)
    producer.flush(timeout=30)
    producer.close()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentictl",
            "bridge",
            "--in",
            src,
            "--out",
            out,
            "--dlq",
            dlq,
            "--bootstrap",
            bootstrap,
            "--group",
            f"g-{tag}",
            "--model-dir",
            str(model_dir),
            "--cache",
            str(cache),
            "--max-chars",
            str(MAX_CHARS),
            "--max-messages",
            str(len(values)),
            "--session-timeout-ms",
            "6000",
            "--max-poll-interval-ms",
            "6000",
            "--connect-timeout",
            "15",
            "-q",
        ],
        capture_output=True,
        env=sentictl_env(),
        timeout=180,
    )
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr.decode()
    verdicts: dict[int, dict] = {}
    consumer = KafkaConsumer(
        out,
        dlq,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    deadline = time.monotonic() + 60
    while len(verdicts) < len(values) and time.monotonic() < deadline:
        for m in consumer:
            i = int(m.key)
            if m.topic == dlq:
                verdicts[i] = {"reason": dict(m.headers)["sentictl-error"].decode()}
            else:
                r = orjson.loads(m.value)
                verdicts[i] = {"text": r["text"], "cache_hit": r["cache_hit"], "truncated": bool(r.get("truncated"))}
    consumer.close()
    assert len(verdicts) == len(values), verdicts
    return [verdicts[i] for i in range(len(values))]


def test_every_door_gives_the_same_verdict_and_shares_one_cache_entry_per_text(
    tiny_model_dir, kafka_bootstrap, tmp_path
):
    cache = tmp_path / "shared.sqlite"
    values = [raw for _, raw, _ in CASES]

    by_score = [verdict_score(tiny_model_dir, cache, raw) for raw in values]
    serve = ServeDoor(tiny_model_dir, cache)
    try:
        by_serve = [serve.verdict(raw) for raw in values]
    finally:
        serve.close()
    by_bridge = bridge_verdicts(kafka_bootstrap, tiny_model_dir, cache, values)

    seen_by_score: set[str] = set()
    for (case, _, expected), s, h, b in zip(CASES, by_score, by_serve, by_bridge):
        for door, got in (("score", s), ("serve", h), ("bridge", b)):
            if expected in ACCEPTED:
                assert got.get("text") == expected, (case, door, got)
                assert got["truncated"] is (expected == LONG), (case, door, got)
            else:
                assert got == {"reason": expected}, (case, door, got)
        if expected in ACCEPTED:
            # score met each distinct text first (its first time a miss); serve and bridge came later.
            assert s["cache_hit"] is (expected in seen_by_score), (case, s)
            seen_by_score.add(expected)
            assert h["cache_hit"] is True and b["cache_hit"] is True, (case, h, b)

    conn = sqlite3.connect(cache)
    try:
        (entries,) = conn.execute('SELECT COUNT(*) FROM "results"').fetchone()
    finally:
        conn.close()
    assert entries == len(ACCEPTED), "one cache entry per distinct normalised text"
