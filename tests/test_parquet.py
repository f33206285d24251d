"""Parquet in and out for `score` on one machine (the `parquet` extra), with real pyarrow-written files.

Uses the bundled model (the tests run in a fresh directory, so no models/finbert is found).
"""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import sentictl_env

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = ["Profit rose sharply.", "", "   ", None, "x" * 60, "Losses widened in the third quarter.", "Sales fell 10%."]


def score(cwd: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "-q", "--no-cache", "--max-chars", "50", *args],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=sentictl_env(),
        timeout=300,
    )


def write_input(path: Path, n: int = 35, row_group_size: int = 8) -> pa.Table:
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "when": pa.array(
                [datetime.datetime(2026, 1, 1) + datetime.timedelta(hours=i) for i in range(n)], pa.timestamp("ms")
            ),
            "amount": pa.array([decimal.Decimal(i) / 4 for i in range(n)], pa.decimal128(10, 2)),
            "tags": pa.array([["a", str(i)] for i in range(n)], pa.list_(pa.string())),
            "headline": pa.array([TEXTS[i % len(TEXTS)] for i in range(n)], pa.string()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return table


def test_one_output_row_per_input_row_in_order_with_kept_types_and_reasons(tmp_path):
    src = write_input(tmp_path / "in.parquet")
    run = score(
        tmp_path,
        "in.parquet",
        "--column",
        "headline",
        "--keep",
        "id",
        "--keep",
        "when",
        "--keep",
        "amount",
        "--keep",
        "tags",
        "-o",
        "out.parquet",
    )
    assert run.returncode == 3, run.stderr  # bad rows: finished, some records were bad
    assert run.stdout == b"" and run.stderr == b""  # bad rows are in the file, not on stderr
    out = pq.read_table(tmp_path / "out.parquet")
    labels = ["positive", "negative", "neutral"]
    assert out.column_names == [
        "id",
        "when",
        "amount",
        "tags",
        "label",
        "score",
        *(f"score_{x}" for x in labels),
        "model",
        "cache_hit",
        "error",
    ]
    for name in ("id", "when", "amount", "tags"):
        assert out.schema.field(name).type == src.schema.field(name).type
        assert out.column(name).equals(src.column(name))
    errors = out.column("error").to_pylist()
    expected = {"": "empty", "   ": "empty", None: "empty", "x" * 60: "too_long"}
    assert errors == [expected.get(TEXTS[i % len(TEXTS)]) for i in range(35)]
    rows = out.to_pylist()
    assert all(r["label"] is None and r["score"] is None and r["cache_hit"] is None for r in rows if r["error"])
    assert {r["model"] for r in rows} == {"finsent-mini:int8"}

    # The scored rows carry what JSON lines output says for the same texts.
    texts = [t for t in src.column("headline").to_pylist() if t and t.strip() and len(t) <= 50]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    plain = [orjson.loads(line) for line in score(tmp_path, "in.txt").stdout.splitlines()]
    good = [r for r in rows if not r["error"]]
    assert [(r["label"], r["score"], [r[f"score_{x}"] for x in labels]) for r in good] == [
        (p["label"], p["score"], [p["scores"][x] for x in labels]) for p in plain
    ]


def test_errors_file_gets_bad_rows_with_source_and_row(tmp_path):
    write_input(tmp_path / "in.parquet", n=7)
    run = score(tmp_path, "in.parquet", "--column", "headline", "-o", "out.parquet", "--errors", "bad.jsonl")
    assert run.returncode == 3
    reports = [orjson.loads(line) for line in (tmp_path / "bad.jsonl").read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["reason"]) for r in reports] == [
        ("in.parquet", 5, "too_long")
    ]  # empties uncounted


def test_non_string_column_and_jsonl_output_of_parquet_input(tmp_path):
    pq.write_table(
        pa.table(
            {
                "n": [1, 2],
                "headline": ["Profit rose.", "Losses widened."],
                "price": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
            }
        ),
        tmp_path / "in.parquet",
    )
    run = score(tmp_path, "in.parquet", "--column", "n", "-o", "out.parquet")
    assert run.returncode == 3
    assert pq.read_table(tmp_path / "out.parquet").column("error").to_pylist() == ["not_string", "not_string"]
    run = score(tmp_path, "in.parquet", "--column", "headline", "--keep", "price")
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(line)["price"] for line in run.stdout.splitlines()] == ["1.25", None]


def test_directory_glob_and_keep_all(tmp_path):
    (tmp_path / "parts").mkdir()
    for i in range(3):
        pq.write_table(
            pa.table({"id": [i * 10, i * 10 + 1], "text": ["Profit rose.", "Sales fell."]}),
            tmp_path / "parts" / f"part-{i}.parquet",
        )
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    for given in ("parts", "parts/*.parquet"):
        run = score(tmp_path, given, "--keep-all", "-o", "out.parquet")
        assert run.returncode == 0, run.stderr
        out = pq.read_table(tmp_path / "out.parquet")
        assert out.column("id").to_pylist() == [0, 1, 10, 11, 20, 21]
        assert out.column("text").to_pylist() == ["Profit rose.", "Sales fell."] * 3
    run = score(tmp_path, "parts", "--keep-all", "--output", "csv")
    assert run.returncode == 0 and run.stdout.splitlines()[0].startswith(b"id,text,label")


def test_parquet_output_needs_a_file_and_never_clobbers_an_input(tmp_path):
    src = tmp_path / "in.parquet"
    write_input(src, n=7)
    before = src.read_bytes()
    run = score(tmp_path, "in.parquet", "--column", "headline", "--output", "parquet")  # stdout is a pipe
    assert run.returncode == 2 and b"--output parquet needs a file" in run.stderr
    run = score(tmp_path, "in.parquet", "--column", "headline", "-o", "in.parquet")
    assert run.returncode == 1 and b"same file as the input" in run.stderr
    assert src.read_bytes() == before
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentictl",
            "score",
            "-q",
            "--cache",
            str(cache),
            "in.parquet",
            "--column",
            "headline",
            "-o",
            str(cache),
        ],
        cwd=tmp_path,
        capture_output=True,
        env=sentictl_env(),
        timeout=300,
    )
    assert run.returncode == 1 and b"cache" in run.stderr
    with open(tmp_path / "redirected.parquet", "wb") as out:  # stdout redirected to a file is a file
        run = score(tmp_path, "in.parquet", "--column", "headline", "--output", "parquet", stdout=out)
    assert run.returncode == 3
    assert pq.read_table(tmp_path / "redirected.parquet").num_rows == 7


def test_missing_column_is_one_line(tmp_path):
    write_input(tmp_path / "in.parquet", n=3)
    run = score(tmp_path, "in.parquet", "--column", "body")
    assert run.returncode == 1
    assert run.stderr.decode().strip().splitlines() == [
        "Error: in.parquet has no column 'body' (it has: id, when, amount, tags, headline); use --column"
    ]


def test_plain_install_paths_never_import_pyarrow_ray_or_dask(tmp_path):
    """score on txt/jsonl/csv, and importing serve, bridge and the API, load none of the scale-out packages."""
    (tmp_path / "a.txt").write_text("Profit rose\n")
    (tmp_path / "a.jsonl").write_text('{"text": "Profit rose", "id": 1}\n')
    (tmp_path / "a.csv").write_text("id,text\n1,Profit rose\n")
    code = """
import sys
from click.testing import CliRunner
import sentictl, sentictl.serve, sentictl.bridge
from sentictl.cli import cli
for args in (["a.txt"], ["a.jsonl", "--keep", "id"], ["a.csv", "--keep", "id", "--output", "csv"],
             ["a.jsonl", "-o", "out.jsonl"]):
    r = CliRunner().invoke(cli, ["score", "-q", "--no-cache", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
sentictl.load(threads=1).classify(["Profit rose"])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pyarrow", "ray", "dask", "distributed", "pandas"})
assert not heavy, heavy
"""
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, env=sentictl_env(), timeout=300
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
