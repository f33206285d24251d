"""Hostile model folders (issue 18, item 5): JSON nested past any sane depth, and files too large to
be what they claim, cost one line and exit 1 from every door, never a traceback."""

from __future__ import annotations

import shutil

import pytest

from conftest import free_port, run_sentictl
from sentictl.config import bundled_model_dir

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


@pytest.fixture
def foreign_with_deep_config(tmp_path):
    """An optimum-style folder (no manifest.json) whose config.json nests 100,000 levels deep."""
    folder = tmp_path / "deep"
    shutil.copytree(bundled_model_dir(), folder)
    (folder / "manifest.json").unlink()
    (folder / "config.json").write_text(DEEP_OBJECT)
    return folder


@pytest.fixture
def deep_manifest(tmp_path):
    folder = tmp_path / "deep-manifest"
    shutil.copytree(bundled_model_dir(), folder)
    (folder / "manifest.json").write_text(DEEP)
    return folder


@pytest.fixture
def huge_manifest(tmp_path):
    folder = tmp_path / "huge-manifest"
    shutil.copytree(bundled_model_dir(), folder)
    with open(folder / "manifest.json", "w") as fh:
        fh.write('{"pad": "')
        fh.write("x" * (17 << 20))
        fh.write('"}')
    return folder


def door(name: str, folder) -> list[str]:
    return {
        "score": ["score", "--no-cache", "--model-dir", str(folder), "-"],
        "info": ["info", "--model-dir", str(folder)],
        "serve": ["serve", "--no-cache", "--model-dir", str(folder), "--port", str(free_port())],
        "bridge": [
            "bridge",
            "--no-cache",
            "--model-dir",
            str(folder),
            "--in",
            "news",
            "--out",
            "scored",
            "--bootstrap",
            f"127.0.0.1:{free_port()}",
            "--connect-timeout",
            "2",
        ],
    }[name]


@pytest.mark.parametrize(
    "which, says",
    [
        ("foreign_with_deep_config", "is not readable JSON"),
        ("deep_manifest", "is not readable JSON"),
        ("huge_manifest", "is over 16 MB"),
    ],
)
@pytest.mark.parametrize("name", ["score", "info", "serve", "bridge"])
def test_a_hostile_json_file_is_one_line_from_every_door(request, which, says, name):
    folder = request.getfixturevalue(which)
    run = run_sentictl(*door(name, folder), input=b"Profit rose\n", timeout=60)
    err = run.stderr.decode()
    assert "Traceback" not in err and "RecursionError" not in err, err
    assert run.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and says in lines[0], err


def test_info_verify_on_a_truncated_weights_file_lists_the_problem_and_exits_4(tiny_model_dir, tmp_path):
    import orjson

    folder = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, folder)
    data = folder / "model_int8.onnx.data"
    data.chmod(0o644)
    with open(data, "r+b") as fh:
        fh.truncate(100)
    run = run_sentictl("info", "--model-dir", str(folder), "--verify", "--variant", "int8")
    assert "Traceback" not in run.stderr.decode()
    assert run.returncode == 4, run.stderr.decode()
    out = orjson.loads(run.stdout)
    assert out["verified"] is False and out["loadable"] is False
    assert out["problems"] == ["int8 weights: model_int8.onnx.data does not match its sha256"]


def test_a_tokenizer_too_large_to_be_one_is_refused_before_it_is_read(tmp_path):
    folder = tmp_path / "huge-tokenizer"
    shutil.copytree(bundled_model_dir(), folder)
    with open(folder / "tokenizer.json", "r+b") as fh:
        fh.truncate(65 << 20)  # sparse: the size is what is checked, before any byte is read
    run = run_sentictl("score", "--no-cache", "--model-dir", str(folder), input=b"Profit rose\n", timeout=60)
    err = run.stderr.decode()
    assert run.returncode == 1 and "Traceback" not in err, err
    assert "over the 64 MB a tokenizer may take" in err
