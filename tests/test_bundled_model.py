"""The bundled finsent-mini model and the model-resolution order."""

from __future__ import annotations

import shutil

import orjson
import pytest

from conftest import sentictl_env
from sentictl import config
from sentictl.engine import model as engine

BUNDLED = config.bundled_model_dir()
needs_bundle = pytest.mark.skipif(not (BUNDLED / "manifest.json").is_file(), reason="bundled model not built")


@needs_bundle
def test_bundled_manifest_verifies():
    assert engine.verify(BUNDLED) == []
    manifest = engine.read_manifest(BUNDLED)
    assert manifest["labels"] == {"0": "positive", "1": "negative", "2": "neutral"}
    shipped = [n for n, v in manifest["variants"].items() if v.get("shipped", True)]
    assert shipped == ["int8"]
    card = manifest["model_card"]
    assert "MiniLM-L6" in card["base_model"] and "Apache-2.0" in card["base_model"]
    assert card["heldout"]["int8"]["accuracy"] >= 0.84
    assert abs(card["heldout"]["int8"]["accuracy"] - card["heldout"]["fp32"]["accuracy"]) <= 0.005


@needs_bundle
@pytest.mark.parametrize(
    "text, label",
    [
        ("Profit fell sharply and the company cut its outlook", "negative"),
        ("Shares surged after record quarterly earnings beat estimates", "positive"),
        ("The company will publish its results on Thursday", "neutral"),
    ],
)
def test_bundled_model_labels_unambiguous_sentences(text, label):
    assert engine.Model(BUNDLED).classify([text])[0]["label"] == label


def _copy_as(src, dest, name):
    """Copy a model directory under another name (the result's "model" field comes from the manifest)."""
    shutil.copytree(src, dest)
    manifest = orjson.loads((dest / "manifest.json").read_bytes())
    manifest["name"] = name
    (dest / "manifest.json").write_bytes(orjson.dumps(manifest))


def _score(sentictl, cwd, env=None, *args):
    run = sentictl("score", "--no-cache", *args, input="Profit fell.\n", cwd=cwd, env=env or sentictl_env())
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return orjson.loads(run.stdout.splitlines()[0])["model"], run.stderr.decode()


@needs_bundle
def test_resolution_order(sentictl, tiny_model_dir, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    # 4. Nothing configured, no export: the bundled model, with a notice naming it and FinBERT.
    model, err = _score(sentictl, cwd)
    assert model == "finsent-mini:int8"
    assert "finsent-mini" in err and "sentictl export" in err
    # 3. The default export location wins over the bundle.
    _copy_as(tiny_model_dir, cwd / "models" / "finbert", "finbert")
    model, err = _score(sentictl, cwd)
    assert model == "finbert:int8" and "bundled" not in err
    # 2. SENTICTL_MODEL_DIR wins over the default location.
    other = tmp_path / "other"
    _copy_as(tiny_model_dir, other, "other")
    model, _ = _score(sentictl, cwd, sentictl_env(SENTICTL_MODEL_DIR=str(other)))
    assert model == "other:int8"
    # 1. --model-dir wins over everything.
    model, _ = _score(
        sentictl, cwd, sentictl_env(SENTICTL_MODEL_DIR=str(other)), "--model-dir", str(cwd / "models" / "finbert")
    )
    assert model == "finbert:int8"


def test_resolve_model_dir_unit(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTICTL_MODEL_DIR", raising=False)
    assert config.resolve_model_dir().bundled
    monkeypatch.setenv("SENTICTL_MODEL_DIR", "/x")
    assert str(config.resolve_model_dir().path) == "/x"
    assert str(config.resolve_model_dir("/y").path) == "/y"


@needs_bundle
def test_info_says_which_model_and_why(sentictl, tmp_path):
    run = sentictl("info", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    info = orjson.loads(run.stdout)
    assert info["bundled"] is True and info["name"] == "finsent-mini"
    assert "no exported model" in info["resolved_because"]
