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
    # -o ray.parquet is a directory of part files whose name order is the input order, file by file.
    parts = sorted((data / "ray.parquet").iterdir())
    assert len(parts) > 1 and all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    assert pa.concat_tables([pq.read_table(p) for p in parts]).equals(want)
    reports = [orjson.loads(line) for line in (data / "bad.jsonl").read_bytes().splitlines()]
    too_long = [i + 1 for i, t in enumerate(texts()) if t == "x" * 60]
    assert [(r["source"], r["line"], r["reason"]) for r in reports] == [("in.parquet", n, "too_long") for n in too_long]


@pytest.mark.parametrize(
    "out, order",
    # JSON lines, in the order blocks finish (written by the driver); part files in input order (by the cluster).
    [("ray.jsonl", "--no-preserve-order"), ("ray.parquet", "--preserve-order")],
)
def test_a_worker_killed_mid_run_is_retried_without_lost_or_duplicated_rows(data, out, order):
    trace = data / "trace"
    trace.mkdir()
    env = sentictl_env(SENTICTL_RAY_TRACE_DIR=str(trace))
    proc = score(
        data,
        "in.parquet",
        "--column",
        "headline",
        "--keep",
        "id",
        "-o",
        out,
        "--workers",
        "2",
        order,
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
    if out.endswith(".jsonl"):
        rows = [orjson.loads(line) for line in (data / out).read_bytes().splitlines()]
    else:
        rows = pq.read_table(data / out).to_pylist()
        assert [r["id"] for r in rows] == list(range(N))  # in input order, across the retried part file
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


def test_an_input_that_fails_on_its_first_read_is_one_line_as_score_says_it(tmp_path):
    # /proc/self/mem opens but every read fails with EIO: the driver's first read (encoding sniffing) included.
    run = score(tmp_path, "/proc/self/mem", "--workers", "1", "--ray")
    assert run.returncode == 1
    errors = [line for line in run.stderr.decode().splitlines() if line.startswith("Error:")]
    assert errors == ["Error: cannot read /proc/self/mem: Input/output error"], run.stderr.decode()[-3000:]


def write_text_inputs(folder: Path) -> list[str]:
    """A text file, JSON lines, a CSV file and a JSON array, each with the bad records its reader reports
    (ids are strings, as a CSV cell is one: a --keep column has one type)."""
    long = "x" * 60
    (folder / "a.txt").write_bytes(f"Profit rose sharply.\n\n{long}\nLosses widened.\n\xffbad\n".encode("latin-1"))
    (folder / "b.jsonl").write_text(
        '{"id": "1", "title": "Profit rose."}\n{"id": "2"}\nnot json\n{"id": "4", "title": 7}\n'
        f'{{"id": "5", "title": "{long}"}}\n{{"id": "6", "title": "Sales fell."}}\n'
    )
    (folder / "c.csv").write_text('id,title\n7,"Shares\nsurged"\n8,\n9,Margins narrowed.\n')
    (folder / "d.json").write_text('[{"id": "10", "title": "Guidance cut."}, {"id": "11"}, "Profit doubled."]')
    return ["a.txt", "b.jsonl", "c.csv", "d.json"]


@pytest.mark.parametrize("keep", [False, True])
def test_ray_reads_text_jsonl_csv_and_json_inputs_as_score_does(tmp_path, keep):
    names = write_text_inputs(tmp_path)
    common = ["--field", "title", "--column", "title"]
    if keep:  # --keep needs fields or columns: no plain text input
        names, common = names[1:], [*common, "--keep", "id"]
    one = score(tmp_path, *names, *common, "-o", "one.parquet", "--errors", "one.jsonl")
    assert one.returncode == 3, one.stderr
    want = pq.read_table(tmp_path / "one.parquet")
    if keep:  # a directory: a former run's part files there are replaced
        (tmp_path / "out").mkdir()
        pq.write_table(want.slice(0, 1), tmp_path / "out" / "part-999999999.parquet")
        run = score(tmp_path, *names, *common, "-o", "out", "--errors", "bad.jsonl", "--workers", "2", "--ray")
        assert run.returncode == 3, run.stderr.decode()[-3000:]
        got = pq.read_table(tmp_path / "out")
        assert got.schema == want.schema and got.equals(want)
    else:  # JSON lines of the Parquet columns, written by the driver
        run = score(tmp_path, *names, *common, "-o", "ray.jsonl", "--errors", "bad.jsonl", "--workers", "2", "--ray")
        assert run.returncode == 3, run.stderr.decode()[-3000:]
        rows = [orjson.loads(line) for line in (tmp_path / "ray.jsonl").read_bytes().splitlines()]
        assert rows == want.to_pylist()
    reports = [orjson.loads(line) for line in (tmp_path / "bad.jsonl").read_bytes().splitlines()]
    expected = [orjson.loads(line) for line in (tmp_path / "one.jsonl").read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["reason"]) for r in reports] == [
        (r["source"], r["line"], r["reason"]) for r in expected
    ]
    assert {r["reason"] for r in reports} >= {"too_long", "missing_field", "bad_json", "not_string"}


def test_ray_refuses_csv_output_and_an_output_directory_it_cannot_fill(data):
    run = score(data, "in.parquet", "--column", "headline", "--output", "csv", "--ray")
    assert run.returncode == 2 and b"not CSV" in run.stderr
    run = score(data, "in.parquet", "--column", "headline", "--workers", "2")
    assert run.returncode == 2 and b"go with --ray" in run.stderr
    (data / "taken").mkdir()
    (data / "taken" / "notes.txt").write_text("mine")
    run = score(data, "in.parquet", "--column", "headline", "-o", "taken", "--ray")
    assert run.returncode == 1 and b"holds notes.txt" in run.stderr
    assert (data / "taken" / "notes.txt").read_text() == "mine"
    (data / "file.parquet").write_bytes(b"")
    run = score(data, "in.parquet", "--column", "headline", "-o", "file.parquet", "--ray")
    assert run.returncode == 1 and b"is a file" in run.stderr
    run = score(data, "in.parquet", "--column", "headline", "--output", "parquet", "--ray")
    assert run.returncode == 2 and b"give -o DIR" in run.stderr
    # Without --ray, -o is a file: a directory is refused as before.
    run = score(data, "in.parquet", "--column", "headline", "-o", "taken")
    assert run.returncode == 2 and b"is a directory" in run.stderr


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
    # A block the driver read (score --ray on a text input): refused rows keep the reader's reason.
    from sentictl.raysources import REASON, TEXT

    read = pa.table({"id": [1, 2], TEXT: [None, "Profit rose."], REASON: ["bad_json", None]})
    out = Classify(threads=1, column=TEXT)(read)
    assert out.column_names[0:2] == ["id", "label"] and TEXT not in out.column_names
    assert out.column("error").to_pylist() == ["bad_json", None]
