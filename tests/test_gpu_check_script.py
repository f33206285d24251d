"""benchmarks/gpu_check.sh is run rarely (on a GPU machine, once): keep it at least well-formed.

Its CPU-only run (`bash benchmarks/gpu_check.sh --quick --cpu-only`) builds and exports a model and
takes about a minute here, too slow for the suite; these checks take well under a second.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_the_shell_part_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_python_part_compiles():
    body = re.search(r"<<'PYEOF'\n(.*?)\nPYEOF\n", SCRIPT.read_text(), re.DOTALL)
    assert body, "the embedded Python program is missing"
    compile(body.group(1), str(SCRIPT), "exec")


def test_help_names_every_option_and_the_not_run_rule():
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--cpu-only", "--quick", "--n", "--texts", "--repeats", "--work", "--wheels", "--budget"):
        assert option in out
    assert "Not run" in out
