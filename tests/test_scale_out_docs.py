"""docs/scale-out.md's Python recipes run as written (each ```python block as a script, in a fresh directory).

As in test_api_docs: a block whose first line is ``# requires: mod ...`` runs only where those
modules are installed (CI installs Ray, pyarrow and Dask through the test extra, not pyspark).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, sentictl_env
from support.docblocks import python_blocks, run_block

DOC = REPO / "docs" / "scale-out.md"
BLOCKS = python_blocks(DOC)


def test_the_doc_has_ray_spark_and_dask_recipes():
    firsts = [b.splitlines()[0] for b in BLOCKS]
    assert any("ray" in f for f in firsts) and any("pyspark" in f for f in firsts) and any("dask" in f for f in firsts)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_recipe_runs(code: str, tmp_path: Path):
    run_block(code, tmp_path, sentictl_env())
