"""The shared SQLite result cache: hits, invalidation, TTL, several processes, no pickle."""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest

from sentictl.engine import Engine
from sentictl.engine.cache import TABLE, ResultCache, cache_key
from sentictl.engine.model import Model


def result(label: str = "neutral", **extra) -> dict:
    """A stored value of the Result shape (the cache treats any other shape as a miss)."""
    return {"label": label, "score": 1.0, "scores": {label: 1.0}, "model": "fake", **extra}


class CountingModel:
    """A fake model that records what it was asked to infer."""

    cache_namespace = "fake:truncate"
    long = "truncate"
    provider = "cpu"
    static_shape = None

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode_inputs(self, inputs):
        from sentictl.engine.model import Encoded

        return [Encoded(x, [[0, 0]], [[0, 0]], [1.0], False) for x in inputs]

    def run(self, encoded):
        self.calls.append([e.input.text for e in encoded])
        return [
            {
                "text": e.input.text,
                "label": "neutral",
                "score": 1.0,
                "scores": {"neutral": 1.0},
                "model": "fake",
                "cache_hit": False,
            }
            for e in encoded
        ]


def test_batch_dedup_and_one_inference_for_misses(cache_path):
    model = CountingModel()
    with ResultCache(cache_path) as cache:
        first = Engine(model, cache).classify(["a", "b", "a", "c"])
        assert model.calls == [["a", "b", "c"]]
        assert [r["text"] for r in first] == ["a", "b", "a", "c"]
        assert not any(r["cache_hit"] for r in first)
        second = Engine(model, cache).classify(["c", "d", "a"])
        assert model.calls[-1] == ["d"]
        assert [r["cache_hit"] for r in second] == [True, False, True]
        assert [r["text"] for r in second] == ["c", "d", "a"]


def test_real_model_results_round_trip(tiny_model_dir, cache_path):
    model = Model(tiny_model_dir)
    texts = ["Profit fell sharply.", "Shares surged."]
    with ResultCache(cache_path) as cache:
        fresh = Engine(model, cache).classify(texts)
        cached = Engine(model, cache).classify(texts)
    for a, b in zip(fresh, cached):
        assert b["cache_hit"] is True
        assert {**a, "cache_hit": True} == b


def test_new_model_or_variant_never_sees_old_results(tiny_model_dir, cache_path):
    with ResultCache(cache_path) as cache:
        Engine(Model(tiny_model_dir, variant="int8"), cache).classify(["Profit fell."])
        other = Engine(Model(tiny_model_dir, variant="fp32"), cache).classify(["Profit fell."])
        chunked = Engine(Model(tiny_model_dir, variant="int8", long="chunk"), cache).classify(["Profit fell."])
    assert other[0]["cache_hit"] is False and other[0]["model"].endswith(":fp32")
    assert chunked[0]["cache_hit"] is False


def test_ttl_expires_entries(cache_path):
    with ResultCache(cache_path) as cache:
        cache.put_many("ns", [("x", result())])
    # Age the entry by rewriting its timestamp rather than sleeping.
    conn = sqlite3.connect(cache_path)
    key = cache_key("ns", "x")
    conn.execute(
        f'UPDATE "{TABLE}" SET value = ? WHERE key = ?', (orjson.dumps({"r": result(), "t": time.time() - 100}), key)
    )
    conn.commit()
    conn.close()
    with ResultCache(cache_path, ttl=50) as cache:
        assert cache.get_many("ns", ["x"]) == {}
        assert cache.clear(expired_only=True) == 1
    with ResultCache(cache_path, ttl=500) as cache:
        assert cache.get_many("ns", ["x"]) == {}  # removed by the expired clear


def test_planted_pickle_is_refused_not_executed(cache_path, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with ResultCache(cache_path) as cache:
        cache.put_many("ns", [("safe", result())])
    conn = sqlite3.connect(cache_path)
    conn.execute(
        f'REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)', (cache_key("ns", "evil"), pickle.dumps(Exploit()))
    )
    conn.commit()
    conn.close()
    with ResultCache(cache_path) as cache:
        found = cache.get_many("ns", ["evil", "safe"])
        assert list(found) == ["safe"]
        assert cache.corrupt == 1
    assert not marker.exists()


_WRITER = """
import sys
from sentictl.engine.cache import ResultCache
def result(i):
    return {"label": "neutral", "score": 1.0, "scores": {"neutral": 1.0}, "model": "fake", "i": i}
path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with ResultCache(path) as cache:
    for batch in range(0, n, 25):
        cache.put_many("ns", [(f"w{worker}-{i}", result(i)) for i in range(batch, min(n, batch + 25))])
        got = cache.get_many("ns", [f"w{worker}-{batch}"])
        assert got, "own write not visible"
print("ok")
"""


def test_three_processes_write_one_file_at_once(cache_path):
    n = 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(cache_path), str(w), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        assert out.strip() == b"ok"
        assert b"locked" not in err
    with ResultCache(cache_path) as cache:
        assert cache.stats()["entries"] == 3 * n
        texts = [f"w{w}-{i}" for w in range(3) for i in range(n)]
        found = cache.get_many("ns", texts)
        assert len(found) == 3 * n
        assert found["w2-299"]["i"] == 299


def test_unwritable_cache_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from sentictl.errors import CacheError

    # Asked for the cache itself (`sentictl cache ...`), an unusable location is an error;
    with pytest.raises(CacheError, match="cannot be used"):
        ResultCache(blocker / "sub" / "cache.sqlite", strict=True)
    # a door goes on without it, and says so (see test_cache_faults.py).
    cache = ResultCache(blocker / "sub" / "cache.sqlite")
    assert cache.put_many("ns", [("x", result())]) == 0
    assert cache.get_many("ns", ["x"]) == {}
    assert cache.failures >= 1


def test_cache_cli_stats_and_clear(sentictl, tiny_model_dir, cache_path):
    run = sentictl("score", "--model-dir", str(tiny_model_dir), "--cache", str(cache_path), input="a\nb\nc\n")
    assert run.returncode == 0, run.stderr
    stats = sentictl("cache", "stats", "--cache", str(cache_path))
    assert stats.returncode == 0
    assert orjson.loads(stats.stdout)["entries"] == 3
    cleared = sentictl("cache", "clear", "--cache", str(cache_path))
    assert cleared.returncode == 0 and b"removed 3" in cleared.stderr
    assert orjson.loads(sentictl("cache", "stats", "--cache", str(cache_path)).stdout)["entries"] == 0
