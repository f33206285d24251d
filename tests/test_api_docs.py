"""docs/python-api.md's examples run as written (each ```python block as a script, in a fresh directory).

A block whose first line is ``# requires: mod ...`` (Spark, Ray, Dask recipes) runs only where those
modules are installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, sentictl_env
from support.docblocks import python_blocks, run_block

DOC = REPO / "docs" / "python-api.md"
BLOCKS = python_blocks(DOC)


def test_the_doc_has_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code: str, tmp_path: Path):
    run_block(code, tmp_path, sentictl_env())
