"""What `sentictl export` says: the install line when the extra is missing, whole hub errors, no third-party noise."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import sentictl_env
from sentictl.errors import ExportError
from sentictl.export import stack
from sentictl.export.checkpoint import first_sentences, resolve_checkpoint

# `python -c HIDE export ...`: the CLI as it runs after a plain `pip install sentictl`, where
# torch, transformers and optimum are simply not there (a meta-path finder answers "no such
# module" for them, as Python does for an uninstalled package; nothing is uninstalled).
HIDE = """
import runpy, sys

class HideExportStack:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideExportStack())
runpy.run_module("sentictl", run_name="__main__", alter_sys=True)
"""
# The same CLI with quiet_third_party() made a no-op, to see what it hides.
LOUD = """
import contextlib, runpy
import sentictl.export.stack as stack
stack.quiet_third_party = contextlib.nullcontext
runpy.run_module("sentictl", run_name="__main__", alter_sys=True)
"""
NOISE = ("torch_dtype", "TracerWarning", "site-packages", "accelerate")


def _cli(
    code: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, env=env or sentictl_env(), cwd=cwd, timeout=300
    )


def test_a_plain_install_is_told_to_install_the_extra_not_a_hub_error(tmp_path):
    # Offline with an empty hub cache: before the fix, the hub was asked first and its error shown.
    env = sentictl_env(HF_HOME=str(tmp_path / "empty-hf"), HF_HUB_OFFLINE="1")
    run = _cli(HIDE, "export", "--out", str(tmp_path / "m"), env=env, cwd=tmp_path)
    assert run.returncode == 1
    err = run.stderr.decode()
    assert err.count("\n") == 1, err  # one line
    assert "`sentictl export` needs the export extra (torch is not installed)" in err
    assert "pip install 'sentictl[export]' --extra-index-url https://download.pytorch.org/whl/cpu" in err
    assert "hub" not in err and "LocalEntryNotFoundError" not in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_the_install_line_comes_first_for_a_local_checkpoint_too(tiny_checkpoint, tmp_path):
    run = _cli(HIDE, "export", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "m"))
    assert run.returncode == 1 and b"needs the export extra" in run.stderr and b"Traceback" not in run.stderr


def test_the_rest_of_the_cli_works_without_the_extra(tiny_model_dir):
    run = _cli(HIDE, "score", "--model-dir", str(tiny_model_dir), "--no-cache", "-q")
    assert run.returncode == 0, run.stderr.decode()[-2000:]


def test_require_names_the_first_missing_package(monkeypatch):
    real = stack.importlib.util.find_spec
    monkeypatch.setattr(
        stack.importlib.util, "find_spec", lambda name, *a: None if name.startswith("optimum") else real(name, *a)
    )
    with pytest.raises(ExportError, match=r"\(optimum-onnx is not installed\): pip install 'sentictl\[export\]'"):
        stack.require()


def test_an_offline_hub_error_is_given_whole():
    from huggingface_hub import snapshot_download

    repo = "sentictl-tests/not-in-any-cache"
    try:  # the error itself, as the hub library words it (HF_HUB_OFFLINE=1: it fails at once)
        snapshot_download(repo_id=repo)
        pytest.skip("the hub answered")
    except Exception as exc:  # noqa: BLE001 - whatever it raises is what export shows
        first_line = str(exc).strip().splitlines()[0]
    with pytest.raises(ExportError) as info:
        resolve_checkpoint(repo, None)
    # Whole (the old 200-character cut fell inside this very message: it is ~230 long today).
    assert "from the Hugging Face hub (" in str(info.value) and f": {first_line})\n" in str(info.value)


def test_long_errors_are_cut_after_a_sentence_never_inside_one():
    assert first_sentences("Short one.\nsecond line") == "Short one."
    long = "First sentence here. " + "word " * 100 + "end."
    cut = first_sentences(long, limit=100)
    assert cut == "First sentence here. …"
    one_long_sentence = "x" * 600
    assert first_sentences(one_long_sentence) == one_long_sentence  # no boundary: the whole line
    assert first_sentences("\n\n") == "no message"


def test_export_prints_no_third_party_noise(tiny_checkpoint, tmp_path):
    run = _cli(
        "import runpy; runpy.run_module('sentictl', run_name='__main__', alter_sys=True)",
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "m"),
        "--variants",
        "all",
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    err = run.stderr.decode()
    assert [word for word in NOISE if word in err] == [], err
    assert "sentictl export [1/" in err and "wrote" in err  # our own progress still shows
    # The same export without the filter shows what it hides (if these libraries still print it).
    loud = _cli(LOUD, "export", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr.decode()[-3000:]
    if not any(word in loud.stderr.decode() for word in NOISE):
        pytest.skip("this torch/transformers/optimum prints none of the known noise")


def test_quieting_is_scoped_to_the_export():
    pytest.importorskip("torch")
    from torch.jit import TracerWarning

    filters = list(warnings.filters)
    loggers = {name: list(logging.getLogger(name).filters) for name in stack._EMITTERS}
    with stack.quiet_third_party():
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("traced a constant", TracerWarning, stacklevel=2)
        assert seen == []
        record = logging.LogRecord(
            "transformers.modeling_utils",
            logging.WARNING,
            __file__,
            1,
            "`torch_dtype` is deprecated! Use `dtype` instead!",
            None,
            None,
        )
        assert logging.getLogger("transformers.modeling_utils").filter(record) is False
        untrained = logging.LogRecord(
            "transformers.modeling_utils",
            logging.WARNING,
            __file__,
            1,
            "Some weights of BertForSequenceClassification were not initialized",
            None,
            None,
        )
        assert logging.getLogger("transformers.modeling_utils").filter(untrained)  # the user's to act on: shown
    assert list(warnings.filters) == filters
    assert {name: list(logging.getLogger(name).filters) for name in stack._EMITTERS} == loggers
