"""The habits that keep the code base as it is: ruff (lint and format) and mypy run with the tests.

Configuration lives in pyproject.toml ([tool.ruff], [tool.mypy]; strict on sentictl.engine and the
public API). The tools are pinned in the test extra, so a new release cannot fail CI on code nobody
touched. Run them by hand the same way: `ruff check . && ruff format --check . && mypy`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PATHS = ["sentictl", "tests", "benchmarks"]


def _tool(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed (it is in the test extra)")
        pytest.skip(f"{module} is not installed: pip install -e '.[test]'")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_no_problem():
    _tool("ruff")
    run = _run("ruff", "check", "--no-cache", *PATHS)
    assert run.returncode == 0, run.stdout + run.stderr


def test_code_is_formatted_as_ruff_formats_it():
    _tool("ruff")
    run = _run("ruff", "format", "--check", "--no-cache", *PATHS)
    assert run.returncode == 0, "run `ruff format sentictl tests benchmarks`:\n" + run.stdout + run.stderr


def test_mypy_finds_no_type_error():
    _tool("mypy")
    run = _run("mypy", "--no-incremental")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout
