"""Which model a command runs, and why: `info`'s "chosen" field, and the stderr line on a terminal."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time

import orjson
import pytest

from conftest import run_sentictl, sentictl_env
from sentictl import config
from sentictl.engine import model as engine

BUNDLED = config.bundled_model_dir()
needs_bundle = pytest.mark.skipif(not (BUNDLED / "manifest.json").is_file(), reason="bundled model not built")


@pytest.fixture
def workdir(tmp_path, tiny_model_dir):
    """A current directory holding an export at the default location, models/finbert."""
    cwd = tmp_path / "work"
    shutil.copytree(tiny_model_dir, cwd / "models" / "finbert")
    return cwd


def run_on_a_terminal(*args: str, input: bytes, cwd, env=None, timeout: float = 120) -> tuple[int, bytes, str]:
    """Run `python -m sentictl ARGS` with stderr on a real pseudo-terminal: (rc, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentictl", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=cwd,
            env=env or sentictl_env(),
        )
    finally:
        os.close(slave)  # the child holds its own copy; EOF on master comes when the child's closes
    proc.stdin.write(input)
    proc.stdin.close()
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out = proc.stdout.read()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out, seen.decode("utf-8", "replace").replace("\r\n", "\n")


def test_info_says_the_default_folder_is_relative_to_the_current_directory(workdir):
    run = run_sentictl("info", cwd=workdir)
    assert run.returncode == 0, run.stderr.decode()
    chosen = orjson.loads(run.stdout)["chosen"]
    assert chosen["path"] == str(workdir / "models" / "finbert")  # absolute, whatever the cwd
    assert "default export location" in chosen["reason"] and "relative to the current directory" in chosen["reason"]
    assert chosen["bundled"] is False


def test_info_names_an_explicit_choice(tiny_model_dir, tmp_path):
    given = orjson.loads(run_sentictl("info", "--model-dir", str(tiny_model_dir), cwd=tmp_path).stdout)["chosen"]
    assert given == {"path": str(tiny_model_dir), "reason": "given with --model-dir", "bundled": False}
    env = sentictl_env(SENTICTL_MODEL_DIR=str(tiny_model_dir))
    by_env = orjson.loads(run_sentictl("info", cwd=tmp_path, env=env).stdout)["chosen"]
    assert by_env["reason"] == "set by SENTICTL_MODEL_DIR" and by_env["path"] == str(tiny_model_dir)


@needs_bundle
def test_info_names_the_bundled_choice(tmp_path):
    chosen = orjson.loads(run_sentictl("info", cwd=tmp_path).stdout)["chosen"]
    assert chosen["bundled"] is True and chosen["path"] == str(BUNDLED)
    assert "no exported model in models/finbert under the current directory" in chosen["reason"]


def test_score_on_a_terminal_names_the_model_and_why(workdir):
    rc, out, terminal = run_on_a_terminal("score", "--no-cache", input=b"Profit fell.\n", cwd=workdir)
    assert rc == 0, terminal
    assert orjson.loads(out.splitlines()[0])["model"] == "tiny:int8"
    lines = [line for line in terminal.splitlines() if line.startswith("sentictl: using ")]
    assert len(lines) == 1, terminal
    assert lines[0].startswith(
        f"sentictl: using tiny:int8 from {workdir / 'models' / 'finbert'}: "
        f"the default export location models/finbert, relative to the current directory"
    )


def test_quiet_or_a_pipe_gets_no_model_line(workdir):
    rc, _, terminal = run_on_a_terminal("score", "--no-cache", "-q", input=b"Profit fell.\n", cwd=workdir)
    assert rc == 0 and "using" not in terminal
    piped = run_sentictl("score", "--no-cache", input="Profit fell.\n", cwd=workdir)
    assert piped.returncode == 0 and b"using" not in piped.stderr  # logs and pipes stay as they were


def test_eval_on_a_terminal_names_the_model_once(tiny_model_dir, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("label,text\nneutral,Flat day\npositive,Shares jumped\n")
    rc, _, terminal = run_on_a_terminal(
        "eval", "--model-dir", str(tiny_model_dir), "--data", str(data), input=b"", cwd=tmp_path
    )
    assert rc == 0, terminal
    lines = [line for line in terminal.splitlines() if line.startswith("sentictl: using ")]
    assert len(lines) == 1 and str(tiny_model_dir) in lines[0] and lines[0].endswith("given with --model-dir")


def test_announce_honours_quiet_and_the_terminal_check(monkeypatch, capsys, tiny_model_dir):
    resolved = config.resolve_model_dir(tiny_model_dir)
    monkeypatch.setattr(engine, "stderr_is_terminal", lambda: True)
    engine.announce(resolved, "tiny:int8", quiet=True)
    assert capsys.readouterr().err == ""
    engine.announce(resolved, "tiny:int8")
    assert capsys.readouterr().err == f"sentictl: using tiny:int8 from {tiny_model_dir}: given with --model-dir\n"
    monkeypatch.setattr(engine, "stderr_is_terminal", lambda: False)
    engine.announce(resolved, "tiny:int8")
    assert capsys.readouterr().err == ""
