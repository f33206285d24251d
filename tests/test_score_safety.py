"""`sentictl score` against hostile files (issue 17): outputs never wipe the result cache, reads are
bounded whatever the input, a failing input is one line, --keep joins results back to their rows.

Real processes and real files throughout; memory itself is measured in
benchmarks/bench_read_memory.py, here only "no traceback, the right count".
"""

from __future__ import annotations

import io
import os
import pty
import sqlite3
import subprocess
import sys

import orjson
import pytest

from conftest import sentictl_env
from sentictl.io import read_source
from sentictl.jsonread import _CappedStrings

LAST = "Shares fell after the warning"


def results(out: bytes) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.startswith(b"{")]


def reports(err: bytes) -> list[dict]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith(b"{")]


def score(model_dir, *args, cache=None, stdin=None, stdout=subprocess.PIPE, input=None):
    cache_args = ["--cache", str(cache)] if cache else ["--no-cache"]
    return subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "-q", "--model-dir", str(model_dir), *cache_args, *args],
        input=input,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=sentictl_env(),
        timeout=300,
    )


def no_traceback(run) -> None:
    assert b"Traceback" not in run.stderr, run.stderr.decode()


def one_line(run) -> str:
    no_traceback(run)
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ----------------------------------------------------------------------------- 1. outputs never wipe the cache
@pytest.fixture
def filled_cache(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache.db"
    src = tmp_path / "in.txt"
    src.write_text("Profit rose\nLosses widened\n")
    run = score(tiny_model_dir, str(src), cache=cache)
    assert run.returncode == 0, run.stderr
    return cache, src


def entries(cache) -> int:
    with sqlite3.connect(cache) as conn:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def test_stdout_appended_to_the_cache_is_refused_and_the_cache_kept(tiny_model_dir, filled_cache):
    cache, src = filled_cache
    before = cache.read_bytes()
    with open(cache, "ab") as out:  # `score in.txt >> "$SENTICTL_CACHE"`
        run = score(tiny_model_dir, str(src), cache=cache, stdout=out)
    assert run.returncode == 1
    assert "stdout is the same file as the result cache" in one_line(run)
    assert cache.read_bytes() == before and entries(cache) == 2


def test_stdout_redirected_onto_the_cache_is_refused_not_rebuilt(tiny_model_dir, filled_cache):
    cache, src = filled_cache
    with open(cache, "wb") as out:  # `score in.txt > "$SENTICTL_CACHE"`: the shell empties it first
        run = score(tiny_model_dir, str(src), cache=cache, stdout=out)
    assert run.returncode == 1
    assert "refusing to overwrite the result cache" in one_line(run)
    # Not silently turned back into an empty SQLite file with the results lost.
    assert cache.stat().st_size == 0


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_errors_file_onto_the_cache_is_refused(tiny_model_dir, filled_cache, suffix):
    cache, src = filled_cache
    target = f"{cache}{suffix}"
    before = {p.name: p.read_bytes() for p in cache.parent.glob("cache.db*")}
    run = score(tiny_model_dir, str(src), "--errors", target, cache=cache)
    assert run.returncode == 1
    assert "refusing to overwrite the result cache" in one_line(run)
    assert {p.name: p.read_bytes() for p in cache.parent.glob("cache.db*")} == before
    assert not list(cache.parent.glob("*.corrupt-*"))
    assert entries(cache) == 2


def test_errors_file_naming_a_cache_not_yet_created_is_refused(tiny_model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Profit rose\n")
    cache = tmp_path / "new-cache.db"
    run = score(tiny_model_dir, str(src), "--errors", str(cache), cache=cache)
    assert run.returncode == 1 and "result cache" in one_line(run)
    assert not cache.exists()


# ----------------------------------------------------------------------------- 3. bounded reads
BIG = 8 << 20  # 8 MB: far over the bound of --max-chars 1000, small enough for any CI


def long_then_ordinary(fmt: str) -> tuple[bytes, list[str]]:
    text = b"Profit rose " * (BIG // 12)
    if fmt == "txt":
        return text + b"\n" + LAST.encode() + b"\n", []
    if fmt == "jsonl":
        return b'{"text": "' + text + b'"}\n' + orjson.dumps({"text": LAST}) + b"\n", ["--format", "jsonl"]
    if fmt == "csv":
        return b"text\n" + text + b"\n" + LAST.encode() + b"\n", ["--format", "csv"]
    if fmt == "json":
        return b'["' + text + b'", ' + orjson.dumps(LAST) + b"]", ["--format", "json"]
    raise ValueError(fmt)


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "json"])
def test_an_over_long_record_is_one_too_long_report_and_the_next_is_scored(tiny_model_dir, fmt):
    data, args = long_then_ordinary(fmt)
    run = score(tiny_model_dir, "--max-chars", "1000", *args, input=data)
    no_traceback(run)
    assert run.returncode == 3
    assert [r["text"] for r in results(run.stdout)] == [LAST]
    (bad,) = reports(run.stderr)
    assert bad["reason"] == "too_long" and bad["line"] in (1, 2)


def test_an_endless_line_of_nuls_is_one_report(tiny_model_dir):
    run = score(tiny_model_dir, "--max-chars", "1000", input=b"\0" * BIG)  # what `score /dev/zero` reads
    no_traceback(run)
    assert run.returncode == 3 and results(run.stdout) == []
    assert [r["reason"] for r in reports(run.stderr)] == ["too_long"]


@pytest.mark.parametrize("read_size", [1, 2, 3, 5, 7, 64, 1 << 16])
def test_capped_json_strings_cut_at_character_boundaries_whatever_the_reads(read_size):
    """Strings past the bound are cut (never inside a character, an escape or a surrogate pair), the rest intact."""
    items = ["ok", "é" * 40, "\\u00e9" * 30, "\\ud83d\\ude00" * 20, 'a\\"b' * 20, "fin"]
    data = ("[" + ", ".join(f'"{s}"' for s in items) + "]").encode()

    class Slow(io.RawIOBase):
        def __init__(self):
            self.data = io.BytesIO(data)

        def read(self, size=-1):
            return self.data.read(min(size, read_size) if size and size > 0 else read_size)

    capped = _CappedStrings(Slow(), 30)
    out = b""
    while chunk := capped.read(1 << 16):
        out += chunk
    parsed = orjson.loads(out)
    assert parsed[0] == "ok" and parsed[-1] == "fin"
    assert [s.endswith("\uffff") for s in parsed] == [False, True, True, True, True, False]
    for cut in parsed[1:5]:
        assert "\ud83d" not in cut[-2:]  # no half of a pair left at the cut
        assert len(cut.encode("utf-16-le", "surrogatepass")) >= 10
    assert capped.cuts == 4


def test_json_array_other_fields_past_the_bound_make_the_item_too_long():
    data = b'[{"text": "fine", "blob": "' + b"x" * 5000 + b'"}, {"text": "next"}]'
    got = list(read_source(io.BufferedReader(io.BytesIO(data)), "in.json", "json", "text", "text", 100))
    assert [getattr(v, "reason", None) for v in got] == ["too_long", None]
    assert got[1].text == "next"


# ----------------------------------------------------------------------------- 4. inputs that fail
def test_an_input_error_mid_read_is_one_line(tiny_model_dir):
    run = score(tiny_model_dir, "/proc/self/mem")  # opens, then every read is EIO
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot read /proc/self/mem: Input/output error"


@pytest.mark.parametrize("name, reason", [("missing.txt", "No such file or directory"), (".", "Is a directory")])
def test_missing_or_unreadable_inputs_exit_1_before_any_work(tiny_model_dir, tmp_path, name, reason):
    good = tmp_path / "good.txt"
    good.write_text("Profit rose\n")
    run = score(tiny_model_dir, str(good), name)
    assert run.returncode == 1 and run.stdout == b""  # nothing scored from good.txt first
    assert one_line(run) == f"Error: cannot read {name}: {reason}"


# ----------------------------------------------------------------------------- 10. --keep, the stdin hint
def test_keep_carries_csv_columns_into_each_result_in_both_output_formats(tiny_model_dir, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('id,when,text\n7,2026-01-02,Profit rose\n8,2026-01-03,\n9,2026-01-04,"Losses, widened"\n')
    run = score(tiny_model_dir, str(src), "--keep", "id", "--keep", "when")
    assert run.returncode == 0, run.stderr
    got = results(run.stdout)
    assert [(r["id"], r["when"], r["text"]) for r in got] == [
        ("7", "2026-01-02", "Profit rose"),
        ("9", "2026-01-04", "Losses, widened"),
    ]
    assert list(got[0])[:3] == ["id", "when", "text"]
    run = score(tiny_model_dir, str(src), "--keep", "id", "--output", "csv")
    header, *rows = run.stdout.decode().splitlines()
    assert header.startswith("id,text,label,score,")
    assert [row.split(",")[0] for row in rows] == ["7", "9"]


def test_keep_reaches_json_fields_nested_and_absent(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        orjson.dumps({"text": "Profit rose", "meta": {"id": 5}, "tags": ["a"]})
        + b"\n"
        + orjson.dumps({"text": LAST})
        + b"\n"
    )
    run = score(tiny_model_dir, str(src), "--keep", "meta.id", "--keep", "tags")
    got = results(run.stdout)
    assert [(r["meta.id"], r["tags"]) for r in got] == [(5, ["a"]), (None, None)]
    run = score(tiny_model_dir, str(src), "--keep", "tags", "--output", "csv")
    assert run.stdout.decode().splitlines()[1].startswith('"[""a""]",Profit rose,')


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keep", "id"], "read as plain lines"),
        (["--format", "csv", "--keep", "label"], "a result already has a 'label' key"),
    ],
)
def test_keep_refuses_what_it_cannot_do(tiny_model_dir, args, message):
    run = score(tiny_model_dir, *args, input=b"text\nProfit rose\n")
    assert run.returncode == 2 and message in run.stderr.decode()


def test_stdin_on_a_terminal_gets_a_hint_and_a_pipe_does_not(tiny_model_dir):
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentictl", "score", "--no-cache", "--model-dir", str(tiny_model_dir)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=sentictl_env(),
        )
        os.write(master, b"Profit rose\n\x04")  # a line, then Ctrl-D at the start of the next
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert [r["text"] for r in results(out)] == ["Profit rose"]
    assert b"Ctrl-D" in err and b"1 text scored" in err
    piped = subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "--no-cache", "--model-dir", str(tiny_model_dir)],
        input=b"Profit rose\n",
        capture_output=True,
        env=sentictl_env(),
        timeout=120,
    )
    assert piped.returncode == 0 and b"1 text scored" in piped.stderr and b"Ctrl-D" not in piped.stderr
