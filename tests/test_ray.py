"""`sentictl score --ray` and `sentictl.ray.Classify` on a local Ray cluster (the `ray` extra).

Each `score --ray` run starts (and stops) its own local cluster of this machine's cores, with 2
actors; the bundled model keeps them light. A test that needs Ray is skipped where it is not installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import sentictl_env

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

N = 2000
TEXTS = ["Profit rose sharply.", "", None, "x" * 60, "Losses widened in the third quarter."]


def texts(n: int = N) -> list:
    return [TEXTS[i % 5] if i % 5 != 4 else f"Sales fell {i}% in the quarter." for i in range(n)]


@pytest.fixture
def data(tmp_path) -> Path:
    pq.write_table(
        pa.table({"id": pa.array(range(N), pa.int64()), "headline": texts()}),
        tmp_path / "in.parquet",
        row_group_size=300,
    )
    return tmp_path


def score(
    cwd: Path, *args: str, env: dict | None = None, prelude: str = "", popen: bool = False
) -> subprocess.CompletedProcess | subprocess.Popen:
    code = f"{prelude}\nfrom sentictl.cli import main\nmain()"
    argv = [sys.executable, "-c", code, "score", "-q", "--no-cache", "--max-chars", "50", *args]
    if popen:
        return subprocess.Popen(
            argv, cwd=cwd, env=env or sentictl_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    return subprocess.run(argv, cwd=cwd, env=env or sentictl_env(), capture_output=True, timeout=300)


def test_ray_output_equals_one_process_score_in_order_with_reasons(data):
    one = score(data, "in.parquet", "--column", "headline", "--keep", "id", "-o", "one.parquet")
    assert one.returncode == 3, one.stderr
    run = score(
        data,
        "in.parquet",
        "--column",
        "headline",
        "--keep",
        "id",
        "-o",
        "ray.parquet",
        "--errors",
        "bad.jsonl",
        "--workers",
        "2",
        "--threads",
        "1",
        "--ray",
    )
    assert run.returncode == 3, run.stderr.decode()[-3000:]
    got, want = pq.read_table(data / "ray.parquet"), pq.read_table(data / "one.parquet")
    assert got.num_rows == N and got.column("id").to_pylist() == list(range(N))
    assert got.schema == want.schema
    assert got.equals(want)  # labels and scores identical, bad rows with the same reasons, same places
    reports = [orjson.loads(line) for line in (data / "bad.jsonl").read_bytes().splitlines()]
    too_long = [i + 1 for i, t in enumerate(texts()) if t == "x" * 60]
    assert [(r["source"], r["line"], r["reason"]) for r in reports] == [("in.parquet", n, "too_long") for n in too_long]


def test_a_worker_killed_mid_run_is_retried_without_lost_or_duplicated_rows(data):
    trace = data / "trace"
    trace.mkdir()
    env = sentictl_env(SENTICTL_RAY_TRACE_DIR=str(trace))
    # JSON lines, in the order blocks finish: the other output and --no-preserve-order, in the same run.
    proc = score(
        data,
        "in.parquet",
        "--column",
        "headline",
        "--keep",
        "id",
        "-o",
        "ray.jsonl",
        "--workers",
        "2",
        "--no-preserve-order",
        "--ray",
        env=env,
        popen=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(trace.iterdir()):  # an actor has started a batch
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        first = next(trace.iterdir()).name
        os.kill(int(first.split("-")[0]), signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err.decode()[-3000:]
    rows = [orjson.loads(line) for line in (data / "ray.jsonl").read_bytes().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(N))  # exactly N rows: none lost, none twice
    assert {r["error"] for r in rows} == {None, "empty", "too_long"}
    batches = 8  # 2,000 rows in blocks of 250: four per actor
    assert len(list(trace.iterdir())) > batches  # the killed actor's batch was started again


def test_an_actor_whose_model_folder_differs_is_refused_with_one_line(data):
    # The driver claims another fingerprint than the folder the actors find: as a node with another copy.
    prelude = "import sentictl.api as a\na.Classifier.fingerprint = property(lambda self: '0' * 64)"
    run = score(
        data, "in.parquet", "--column", "headline", "-o", "ray.parquet", "--workers", "1", "--ray", prelude=prelude
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.decode().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "holds another model" in errors[0], run.stderr.decode()[-3000:]


def test_ray_needs_parquet_inputs_and_refuses_csv_output(data):
    (data / "in.txt").write_text("Profit rose\n")
    run = score(data, "in.txt", "--ray")
    assert run.returncode == 2 and b"--ray reads Parquet" in run.stderr
    run = score(data, "in.parquet", "--column", "headline", "--output", "csv", "--ray")
    assert run.returncode == 2 and b"not CSV" in run.stderr
    run = score(data, "in.parquet", "--column", "headline", "--workers", "2")
    assert run.returncode == 2 and b"go with --ray" in run.stderr


def test_classify_without_a_cluster_adds_the_result_columns():
    """Classify is a plain callable class: what each actor runs, checked here in-process."""
    import sentictl
    from sentictl.ray import Classify

    batch = pa.table({"id": [1, 2, 3], "text": ["Profit rose.", None, "Losses widened."]})
    out = Classify(threads=1)(batch)
    labels = sentictl.load(threads=1).labels
    assert out.column_names == [
        "id",
        "text",
        "label",
        "score",
        *(f"score_{x}" for x in labels),
        "model",
        "cache_hit",
        "error",
    ]
    assert out.column("error").to_pylist() == [None, "empty", None]
    assert Classify(threads=1, keep=["id"])(batch.to_pandas()).column_names[0:2] == ["id", "label"]
    with pytest.raises(sentictl.ModelMismatch, match="holds another model"):
        Classify(threads=1, fingerprint="0" * 64)
