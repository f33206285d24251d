"""Outputs never clobber inputs, and an output that cannot be written is one line and exit 1.

Real processes throughout; shell redirections (`>>`, `> /dev/full`, `| head`) run in a real bash.
Every score call passes --no-cache so no cache is read or written.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import run_sentictl, sentictl_env

TEXT = b"Profit fell sharply and the company cut its outlook.\nShares surged after record earnings.\n"
FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")


def shell(command: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a bash command line where `sentictl` means this interpreter's `python -m sentictl`."""
    sentictl = f"{shlex.quote(sys.executable)} -m sentictl"
    return subprocess.run(
        ["bash", "-c", command.replace("sentictl", sentictl, 1)],
        capture_output=True,
        env=sentictl_env(),
        cwd=cwd,
        timeout=timeout,
    )


def no_traceback(run: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in run.stderr and b"Exception ignored" not in run.stderr, run.stderr.decode()


def one_line(run: subprocess.CompletedProcess) -> str:
    """With -q the only thing on stderr is the error: exactly one line."""
    no_traceback(run)
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def model(tiny_model_dir) -> str:
    return f"--model-dir {shlex.quote(str(tiny_model_dir))}"


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT)
    return path


def score(tiny_model_dir: Path, *args: str, cwd: Path, input: bytes | None = None) -> subprocess.CompletedProcess:
    return run_sentictl("score", "--model-dir", str(tiny_model_dir), "--no-cache", "-q", *args, input=input, cwd=cwd)


# ----------------------------------------------------------------------------- --errors is an input
def test_errors_same_as_input_is_refused_and_input_intact(tiny_model_dir, src, tmp_path):
    run = score(tiny_model_dir, "f.txt", "--errors", "f.txt", cwd=tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert run.stdout == b""
    message = one_line(run)
    assert "--errors f.txt" in message and "input f.txt" in message


def test_errors_hard_link_to_input_is_refused(tiny_model_dir, src, tmp_path):
    os.link(src, tmp_path / "link.jsonl")
    run = score(tiny_model_dir, str(src), "--errors", str(tmp_path / "link.jsonl"), cwd=tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert str(src) in one_line(run)


def test_errors_same_as_stdin_is_refused(model, src, tmp_path):
    run = shell(f"sentictl score {model} --no-cache -q --errors f.txt < f.txt", tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert "stdin" in one_line(run)


def test_errors_same_as_stdout_is_refused(model, src, tmp_path):
    run = shell(f"sentictl score {model} --no-cache -q f.txt --errors out.jsonl >> out.jsonl", tmp_path)
    assert run.returncode == 1
    assert "same file as stdout" in one_line(run)
    assert src.read_bytes() == TEXT


def test_a_fresh_errors_file_still_works_and_is_truncated(tiny_model_dir, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"good one\n\xff broken\n")
    errors = tmp_path / "errors.jsonl"
    errors.write_bytes(b"old junk that is much longer than the new report\n" * 20)
    run = score(tiny_model_dir, "in.txt", "--errors", "errors.jsonl", cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    assert [orjson.loads(line)["text"] for line in run.stdout.splitlines()] == ["good one"]
    assert [orjson.loads(line) for line in errors.read_bytes().splitlines()] == [
        {"source": "in.txt", "line": 2, "reason": "invalid_utf8", "error": "invalid UTF-8"}
    ]


# ----------------------------------------------------------------------------- stdout is an input
def test_stdout_appended_to_the_input_is_refused(model, src, tmp_path):
    run = shell(f"sentictl score {model} --no-cache -q f.txt >> f.txt", tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    message = one_line(run)
    assert "stdout" in message and "f.txt" in message


def test_stdout_to_a_hard_link_of_the_input_is_refused(model, src, tmp_path):
    os.link(src, tmp_path / "results.jsonl")
    run = shell(f"sentictl score {model} --no-cache -q f.txt >> results.jsonl", tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert "f.txt" in one_line(run)


def test_stdout_truncating_the_input_is_refused(model, src, tmp_path):
    # The shell empties f.txt before sentictl starts; what we can do is refuse, not "0 texts scored".
    run = shell(f"sentictl score {model} --no-cache f.txt > f.txt", tmp_path)
    assert run.returncode == 1
    assert b" scored, " not in run.stderr
    no_traceback(run)
    assert b"f.txt" in run.stderr


def test_stdin_and_stdout_the_same_file_is_refused(model, src, tmp_path):
    run = shell(f"sentictl score {model} --no-cache -q < f.txt >> f.txt", tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert "stdin" in one_line(run)


def test_stdout_to_another_file_is_fine(model, src, tmp_path):
    run = shell(f"sentictl score {model} --no-cache -q f.txt >> results.jsonl", tmp_path)
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "results.jsonl").read_bytes().splitlines()) == 2
    assert src.read_bytes() == TEXT


# ----------------------------------------------------------------------------- outputs that cannot be written
def test_errors_into_a_missing_directory(tiny_model_dir, src, tmp_path):
    target = tmp_path / "missing" / "errors.jsonl"
    run = score(tiny_model_dir, str(src), "--errors", str(target), cwd=tmp_path)
    assert run.returncode == 1
    assert one_line(run) == f"Error: cannot write --errors to {target}: No such file or directory"
    assert not target.parent.exists()


def test_errors_under_a_regular_file(tiny_model_dir, src, tmp_path):
    run = score(tiny_model_dir, str(src), "--errors", "f.txt/errors.jsonl", cwd=tmp_path)
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot write --errors to f.txt/errors.jsonl: Not a directory"
    assert src.read_bytes() == TEXT


def test_errors_permission_denied_is_one_line(monkeypatch, tmp_path):
    # Tests may run as root, where chmod cannot deny anything: fake the open() failure instead.
    from sentictl import outputs as io
    from sentictl.errors import OutputError

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.os, "open", denied)
    with pytest.raises(OutputError, match=r"^cannot write --errors to x.jsonl: Permission denied$"):
        io.open_output("x.jsonl", [])


@needs_dev_full
@pytest.mark.parametrize("output", ["jsonl", "csv"])
def test_stdout_on_a_full_disk(model, src, tmp_path, output):
    run = shell(f"sentictl score {model} --no-cache -q --output {output} f.txt > /dev/full", tmp_path)
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot write results to stdout: No space left on device"


@needs_dev_full
def test_errors_on_a_full_disk(tiny_model_dir, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"good one\n\xff broken\n")
    run = score(tiny_model_dir, "in.txt", "--errors", str(FULL), cwd=tmp_path)
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot write --errors to /dev/full: No space left on device"


def test_closed_pipe_stays_quiet(model, tmp_path):
    (tmp_path / "big.txt").write_text("Company shares rose after record quarterly earnings.\n" * 3000)
    run = shell(f"set -o pipefail; sentictl score {model} --no-cache -q big.txt | head -1", tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert run.stderr == b""


# ----------------------------------------------------------------------------- eval and bench
@pytest.fixture
def labelled(tmp_path) -> Path:
    path = tmp_path / "d.csv"
    path.write_bytes(b"label,text\npositive,Shares surged after record earnings.\nnegative,Profit fell sharply.\n")
    return path


@needs_dev_full
def test_eval_report_on_a_full_disk(model, labelled, tmp_path):
    run = shell(f"sentictl eval {model} --data d.csv --variants fp32 -q > /dev/full", tmp_path)
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot write the report to stdout: No space left on device"


def test_eval_report_appended_to_its_data_is_refused(model, labelled, tmp_path):
    before = labelled.read_bytes()
    run = shell(f"sentictl eval {model} --data d.csv --variants fp32 -q >> d.csv", tmp_path)
    assert run.returncode == 1
    assert labelled.read_bytes() == before
    assert "d.csv" in one_line(run)


BENCH_CHEAP = "--baseline none --limit 2 --batch-sizes 1 --repeats 1 --warmup 0 --cold-starts 1 -q"


def test_bench_out_that_cannot_be_a_directory(model, src, tmp_path):
    run = shell(f"sentictl bench {model} --texts f.txt {BENCH_CHEAP} --out f.txt/out", tmp_path)
    assert run.returncode == 1
    assert one_line(run) == "Error: cannot write --out to f.txt/out: Not a directory"
    assert src.read_bytes() == TEXT


def test_bench_report_appended_to_its_texts_is_refused(model, src, tmp_path):
    run = shell(f"sentictl bench {model} --texts f.txt {BENCH_CHEAP} --out out >> f.txt", tmp_path)
    assert run.returncode == 1
    assert src.read_bytes() == TEXT
    assert "f.txt" in one_line(run)


def test_bench_out_holding_the_texts_is_refused(tmp_path):
    from sentictl.bench import prepare_out_dir
    from sentictl.errors import OutputError

    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.md").write_bytes(TEXT)
    with pytest.raises(OutputError, match="would overwrite the input"):
        prepare_out_dir(out, [out / "bench.md"])
    assert (out / "bench.md").read_bytes() == TEXT
    prepare_out_dir(tmp_path / "new" / "dir", [out / "bench.md"])  # created, writable: fine
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())


def test_bench_files_that_fail_late_keep_the_report(tmp_path):
    from sentictl.bench import write_outputs

    report = {"notes": []}
    write_outputs(report, tmp_path / "gone")  # e.g. the directory was removed during the run
    assert report["files"] == []
    assert report["out_error"] == f"cannot write --out to {tmp_path / 'gone' / 'bench.json'}: No such file or directory"
