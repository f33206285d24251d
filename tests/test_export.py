"""`sentictl export`: the model directory, manifest, parity, the hub path (offline) and its errors."""

from __future__ import annotations

import csv

import orjson
import pytest

from conftest import run_sentictl, sentictl_env
from sentictl.engine import model as engine
from sentictl.errors import SentictlError
from sentictl.export import mark_unusable, parse_variants


def test_manifest_contents(tiny_model_dir):
    manifest = orjson.loads((tiny_model_dir / "manifest.json").read_bytes())
    assert manifest["labels"] == {"0": "positive", "1": "negative", "2": "neutral"}
    assert manifest["max_length"] == 128
    assert manifest["source"]["kind"] == "local"
    assert set(manifest["variants"]) == {"fp32", "int8", "fp16", "coreml"}
    for name, v in manifest["variants"].items():
        assert (tiny_model_dir / v["file"]).is_file(), name
        assert v["sha256"] == engine.sha256_file(tiny_model_dir / v["file"])
        assert v["usable"] is True
        assert "parity" in v
    assert manifest["variants"]["int8"]["quantization"]["per_channel"] is True
    assert manifest["variants"]["int8"]["quantization"]["mode"] == "dynamic"
    # Row-wise int8 by default (a text's result never depends on its batch): every layer in int8.
    assert manifest["variants"]["int8"]["quantization"]["recipe"] == "rowwise"
    assert manifest["variants"]["int8"]["quantization"]["fp32_layers"] == []
    assert manifest["variants"]["int8"]["quantization"]["isa"] in ("avx512_vnni", "avx512", "avx2", "arm64")
    assert manifest["variants"]["fp16"]["provider"] == "cuda"
    assert manifest["variants"]["coreml"]["static_shape"] == [1, 128]
    assert manifest["parity"]["sentences"] == 50
    assert manifest["parity"]["fp32_vs_pytorch_max_abs_diff"] < 1e-4
    assert 0.0 <= manifest["variants"]["int8"]["parity"]["label_agreement"] <= 1.0
    assert {"onnxruntime", "optimum", "transformers", "torch"} <= set(manifest["tools"])
    assert engine.verify(tiny_model_dir) == []


def test_verify_detects_a_modified_file(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    with open(copy / "model_int8.onnx", "ab") as fh:
        fh.write(b"\0")
    assert engine.verify(copy) == ["int8: model_int8.onnx does not match its sha256"]


def test_weights_sit_beside_each_graph_at_aligned_offsets(tiny_model_dir):
    """fp32, int8 and fp16 keep their weights in <file>.data (ONNX external data), big tensors at 64 KiB offsets."""
    onnx = pytest.importorskip("onnx")
    from sentictl.export.external import ALIGN, MIN_EXTERNAL_BYTES

    manifest = engine.read_manifest(tiny_model_dir)
    for name in ("fp32", "int8", "fp16"):
        v = manifest["variants"][name]
        data = tiny_model_dir / v["data"]["file"]
        assert data.name == v["file"] + ".data"
        assert v["data"]["sha256"] == engine.sha256_file(data) and v["data"]["bytes"] == data.stat().st_size
        graph = onnx.load(str(tiny_model_dir / v["file"]), load_external_data=False).graph
        external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        inline = [t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        assert external and all(len(t.raw_data) < MIN_EXTERNAL_BYTES for t in inline), name
        spans = sorted(
            (int(i["offset"]), int(i["length"])) for i in ({e.key: e.value for e in t.external_data} for t in external)
        )
        assert all(offset % ALIGN == 0 for offset, length in spans if length >= ALIGN), name
        assert all(a + la <= b for (a, la), (b, _) in zip(spans, spans[1:])), name  # no overlaps
        assert spans[-1][0] + spans[-1][1] == data.stat().st_size
    assert "data" not in manifest["variants"]["coreml"]  # CoreML's static graph stays one file
    info = orjson.loads(run_sentictl("info", "--model-dir", str(tiny_model_dir)).stdout)["variants"]
    assert info["int8"]["weights_file"] == "model_int8.onnx.data" and "weights_file" not in info["coreml"]


def test_single_file_export_scores_the_same(tiny_checkpoint, tiny_model_dir, tmp_path, sentictl):
    out = tmp_path / "single"
    run = sentictl("export", "--model", str(tiny_checkpoint), "--out", str(out), "--single-file")
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    manifest = engine.read_manifest(out)
    assert not list(out.glob("*.data")) and all("data" not in v for v in manifest["variants"].values())
    texts = "Profit fell sharply after the merger.\nShares surged on record earnings.\nThe board met.\n"
    scores = {}
    for folder in (out, tiny_model_dir):
        run = sentictl("score", "--model-dir", str(folder), "--variant", "int8", "--no-cache", input=texts)
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        scores[folder] = [orjson.loads(line)["scores"] for line in run.stdout.splitlines()]
    assert scores[out] == scores[tiny_model_dir]  # the same weights, only stored differently
    # ...under a fingerprint of its own: the files differ, so the cache must not mix them.
    assert engine.fingerprint(manifest, "int8") != engine.fingerprint(engine.read_manifest(tiny_model_dir), "int8")


def test_parse_variants():
    assert parse_variants("auto") == ["fp32", "int8"]
    assert parse_variants("int8") == ["fp32", "int8"]
    assert parse_variants("coreml,fp16") == ["fp32", "fp16", "coreml"]
    with pytest.raises(SentictlError, match="bf16"):
        parse_variants("int8,bf16")


def test_mark_unusable_uses_max_drop():
    variants = {"fp32": {"usable": True}, "int8": {"usable": True}, "fp16": {"usable": True}}
    mark_unusable(variants, {"fp32": 0.90, "int8": 0.895, "fp16": 0.8}, max_drop=1.0)
    assert variants["int8"]["usable"] is True
    assert variants["fp16"]["usable"] is False and "10.00 accuracy points" in variants["fp16"]["unusable_reason"]
    assert variants["fp32"]["usable"] is True


def test_export_with_eval_data_records_accuracy(tiny_checkpoint, tmp_path, sentictl):
    data = tmp_path / "labelled.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "text"])
        for i, label in enumerate(["positive", "negative", "neutral"] * 5):
            w.writerow([label, f"profit rose {i} percent" if label == "positive" else f"shares fell {i}"])
    out = tmp_path / "m"
    run = sentictl(
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--variants",
        "int8",
        "--eval-data",
        str(data),
        "--max-length",
        "64",
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["max_length"] == 64
    assert manifest["eval"]["texts"] == 15
    for name in ("fp32", "int8"):
        assert 0.0 <= manifest["variants"][name]["eval"]["accuracy"] <= 1.0
    assert manifest["variants"]["fp32"]["eval"]["label_agreement_vs_fp32"] == 1.0
    assert b"[1/" in run.stderr  # progress on stderr
    # A second export to the same place needs --force.
    again = sentictl("export", "--model", str(tiny_checkpoint), "--out", str(out))
    assert again.returncode == 1 and b"--force" in again.stderr


def test_default_model_from_an_offline_hub_cache(tiny_checkpoint, tmp_path, sentictl):
    """The default --model (ProsusAI/finbert) resolved through HF_HOME, as on a real machine."""
    from support.checkpoints import install_in_hf_cache

    hf_home = tmp_path / "hf"
    revision = "a" * 40
    install_in_hf_cache(tiny_checkpoint, hf_home, "ProsusAI/finbert", revision)
    work = tmp_path / "project"
    work.mkdir()
    env = sentictl_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    run = sentictl("export", env=env, cwd=work)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    manifest = orjson.loads((work / "models" / "finbert" / "manifest.json").read_bytes())
    assert manifest["source"] == {"id": "ProsusAI/finbert", "revision": revision, "kind": "hub"}
    assert set(manifest["variants"]) == {"fp32", "int8"}
    # The default export location is then what score uses, with no --model-dir.
    scored = sentictl("score", "--no-cache", env=env, cwd=work, input="Profit fell.\n")
    assert scored.returncode == 0, scored.stderr
    assert orjson.loads(scored.stdout)["model"] == "finbert:int8"
    assert b"bundled" not in scored.stderr


def test_unreachable_hub_is_a_clear_error(tmp_path, sentictl):
    env = sentictl_env(HF_HOME=str(tmp_path / "empty-hf"), HF_HUB_OFFLINE="1")
    run = sentictl("export", "--out", str(tmp_path / "m"), env=env, cwd=tmp_path)
    assert run.returncode == 1
    err = run.stderr.decode()
    assert "Traceback" not in err
    assert "cannot get ProsusAI/finbert" in err and "--model /path/to/finbert" in err
    assert not (tmp_path / "m").exists()


def test_not_a_checkpoint_dir(tmp_path, sentictl):
    (tmp_path / "empty").mkdir()
    run = sentictl("export", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "m"))
    assert run.returncode == 1 and b"no config.json" in run.stderr


def test_keep_only_int8_for_a_small_bundle(tiny_checkpoint, tmp_path, sentictl):
    out = tmp_path / "bundle"
    run = sentictl(
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--variants",
        "int8",
        "--keep",
        "int8",
        "--quantize-ops",
        "MatMul,Gather",
        "--fp32-layers",
        "none",
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert not (out / "model.onnx").exists() and not (out / "model.onnx.data").exists()
    assert (out / "model_int8.onnx.data").is_file()
    assert manifest["variants"]["fp32"]["shipped"] is False
    assert "parity" in manifest["variants"]["fp32"]  # figures kept for reference
    assert manifest["variants"]["int8"]["quantization"]["operators"] == ["MatMul", "Gather"]
    assert manifest["variants"]["int8"]["quantization"]["fp32_nodes"] == 0
    assert engine.verify(out) == []
    assert engine.Model(out).variant == "int8"
    with pytest.raises(SentictlError, match="the fp32 variant's file is not shipped with this model"):
        engine.Model(out, variant="fp32")
