"""Run a doc's ```python blocks as written: each as a script in a fresh directory.

A block whose first line is ``# requires: mod ...`` runs only where those modules are installed
(the test extra installs Ray, pyarrow, Dask and pyspark, so in CI every block runs).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def python_blocks(doc: Path) -> list[str]:
    """The doc's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_block(code: str, where: Path, env: dict[str, str]) -> None:
    """Run one block in ``where`` (skip when a ``# requires:`` module is missing); it must exit 0."""
    first = code.splitlines()[0]
    if first.startswith("# requires:"):
        missing = [m for m in first.split(":", 1)[1].split() if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}")
        if "pyspark" in first and shutil.which("java") is None:
            pytest.skip("pyspark needs Java (17 or later) on PATH")
    script = where / "block.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=where, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
