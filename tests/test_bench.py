"""`sentictl bench`: a smoke run on the tiny model (no timing assertions) and the harness's arithmetic."""

from __future__ import annotations

import json
import shutil

import pytest

from sentictl import bench
from sentictl.errors import SentictlError


def test_percentile_and_summary():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert bench.percentile(values, 50) == pytest.approx(0.050)
    assert bench.percentile(values, 99) == pytest.approx(0.099)
    assert bench.percentile([0.5, 0.1], 99) == 0.5  # few samples: the worst one
    s = bench.summarize([0.01, 0.03, 0.02], [2.0, 4.0, 3.0], 300)
    assert s["texts_per_s"] == pytest.approx(100.0)
    assert s["p50_ms"] == pytest.approx(20.0)
    assert (s["calls"], s["passes"]) == (3, 3)


def test_batch_sizes_are_parsed_and_checked():
    assert bench.parse_batch_sizes("32, 1,8,8") == [1, 8, 32]
    for bad in ("", "0", "a,b", "-4"):
        with pytest.raises(SentictlError):
            bench.parse_batch_sizes(bad)


def test_speedups_against_the_best_pipeline_batch():
    rows = [
        {"contender": "hf-pipeline", "batch_size": 1, "texts_per_s": 10.0},
        {"contender": "hf-pipeline", "batch_size": 8, "texts_per_s": 20.0},
        {"contender": "score-process", "variant": "int8", "batch_size": "budget", "texts_per_s": 130.0},
        {"contender": "onnxruntime", "variant": "fp32", "batch_size": 8, "texts_per_s": 50.0},
    ]
    sp = bench.speedups(rows)
    assert sp["baseline"] == "hf-pipeline batch 8"
    assert sp["score_process"]["ratio"] == pytest.approx(6.5)
    assert rows[3]["vs_pipeline"] == pytest.approx(2.5)


def test_padding_efficiency_counts_real_over_padded_tokens(tiny_model_dir):
    from sentictl.engine import Engine
    from sentictl.engine.model import Model

    model = Model(tiny_model_dir, provider="cpu", variant="fp32")
    texts = ["profit", "profit rose sharply after record quarterly earnings"]
    short, long = (len(ids) + 2 for ids in model.encode(texts))
    # batch 2: one batch padded to the long text; batch 1: no padding at all.
    engine = Engine(model)
    assert bench.padding_engine(engine, texts, 2) == pytest.approx((short + long) / (2 * long))
    assert bench.padding_engine(engine, texts, 1) == 1.0


def test_bench_smoke_on_tiny_model(sentictl, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(f"Company {i} shares rose after record quarterly earnings." * (1 + i % 3) for i in range(12)) + "\n\n"
    )
    proc = sentictl(
        "bench",
        "--model-dir",
        str(tiny_model_dir),
        "--texts",
        str(texts),
        "--batch-sizes",
        "1,4",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--cold-starts",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert "Thread budget: 1 threads for every contender" in stdout
    assert "| contender | variant | batch | texts/s |" in stdout
    assert "sentictl bench [1/" in stderr  # progress goes to stderr, the table to stdout

    report = json.loads((out / "bench.json").read_text())
    assert report["threads"] == 1 and report["texts"]["n"] == 12
    assert report["variants"] == ["fp32", "int8"]  # auto: the cpu variants of the tiny model
    rows = report["rows"]
    assert not [r for r in rows if "error" in r], rows
    got = {(r["contender"], r.get("variant"), r["batch_size"]) for r in rows}
    for variant in ("fp32", "int8"):
        for b in (1, 4, "budget"):
            assert ("onnxruntime", variant, b) in got
        assert ("score-process", variant, "budget") in got
    assert {("tokenize", None, 1), ("cache-hit", "int8", 4), ("cold-start", "int8", 1)} <= got
    # torch and transformers are in the dev environment, so the baseline runs on the source checkpoint.
    assert ("hf-pipeline", "torch fp32", 4) in got
    assert report["speedup"]["score_process"]["ratio"] > 0
    for r in rows:
        if r["contender"] != "cold-start":
            assert r["texts_per_s"] > 0
        assert r["p99_ms"] >= r["p50_ms"] > 0
        assert r["peak_rss_mb"] > 10
        if "padding_efficiency" in r:
            assert 0 < r["padding_efficiency"] <= 1
    by_key = {(r["contender"], r.get("variant"), r["batch_size"]): r for r in rows}
    assert by_key[("onnxruntime", "fp32", 1)]["padding_efficiency"] == 1.0
    assert by_key[("onnxruntime", "fp32", 4)]["padding_efficiency"] < 1.0  # texts of 1-3× length
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.md").read_text().startswith("Model: ")


def test_bench_skips_the_baseline_when_the_checkpoint_is_gone(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["source"] = {"id": str(tmp_path / "nowhere"), "kind": "local", "revision": None}
    (model / "manifest.json").write_text(json.dumps(manifest))
    texts = tmp_path / "t.txt"
    texts.write_text("Shares fell.\nProfit rose.\n")
    report = bench.run_bench(
        model,
        texts,
        variants="fp32",
        batch_sizes="2",
        threads=1,
        out=None,
        repeats=1,
        warmup=0,
        cold_starts=1,
        quiet=True,
    )
    assert not any(r["contender"] == "hf-pipeline" for r in report["rows"])
    assert any(n.startswith("baseline skipped: the source checkpoint") for n in report["notes"])
    assert report["speedup"] == {}


def test_bench_bad_option_is_a_clean_error(sentictl, tiny_model_dir):
    proc = sentictl("bench", "--model-dir", str(tiny_model_dir), "--batch-sizes", "0,x", "--baseline", "none")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "--batch-sizes" in err and "Traceback" not in err


def test_commands_have_help_with_examples(sentictl):
    for command in ("bench", "eval"):
        proc = sentictl(command, "--help")
        assert proc.returncode == 0
        assert "Examples:" in proc.stdout.decode() and "SENTICTL_" in proc.stdout.decode()
