"""docs/scale-out.md's Python recipes run as written (each ```python block as a script, in a fresh directory).

As in test_api_docs: a block whose first line is ``# requires: mod ...`` runs only where those
modules are installed (CI installs Ray, pyarrow and Dask through the test extra, not pyspark).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, sentictl_env

DOC = REPO / "docs" / "scale-out.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_doc_has_ray_spark_and_dask_recipes():
    firsts = [b.splitlines()[0] for b in BLOCKS]
    assert any("ray" in f for f in firsts) and any("pyspark" in f for f in firsts) and any("dask" in f for f in firsts)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_recipe_runs(code: str, tmp_path: Path):
    first = code.splitlines()[0]
    if first.startswith("# requires:"):
        missing = [m for m in first.split(":", 1)[1].split() if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}")
    script = tmp_path / "recipe.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=sentictl_env(), capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
