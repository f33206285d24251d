"""Row-wise int8 (sentictl/export/quantize.py): one activation scale per token, on hand-built graphs
and on the tiny export; the per-tensor recipe stays selectable."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from sentictl.engine import model as engine
from sentictl.export import quantize, smoothing

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _dense_graph(path, w, bias):
    """x [B, S, K] → MatMul(W) + bias, as optimum writes a BERT dense layer (bias first in the Add)."""
    from onnx import TensorProto, helper, numpy_helper

    k = w.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["mm"], name="/enc/layer.0/dense/MatMul"),
            helper.make_node("Add", ["b", "mm"], ["y"], name="/enc/layer.0/dense/Add"),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(path, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def dense(tmp_path):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    src = _dense_graph(tmp_path / "fp32.onnx", w, bias)
    dest = tmp_path / "int8.onnx"
    done = quantize.rowwise_int8(src, dest)
    return src, dest, done, rng


def test_quantize_weight_per_column():
    w = np.array([[1.0, -0.02, 0.0], [-0.25, 0.005, 0.0]], dtype=np.float32)
    q, scale = quantize.quantize_weight(w)
    assert q.dtype == np.int8 and scale.shape == (3,)
    assert list(q[:, 0]) == [127, -32] and list(q[:, 1]) == [-127, 32]
    assert scale[2] == 1.0 and list(q[:, 2]) == [0, 0]  # an all-zero column gets a harmless scale
    assert np.abs(q * scale - w).max() <= scale.max() / 2 + 1e-7


def test_rowwise_graph_replaces_dense_matmuls(dense):
    _, dest, done, _ = dense
    ops = [n.op_type for n in onnx.load(str(dest)).graph.node]
    assert done["matmuls_int8"] == 1 and done["row_quantizers"] == 1
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops
    assert "DynamicQuantizeLinear" not in ops  # the per-tensor range is what made results batch-dependent


def test_rowwise_is_close_to_fp32(dense):
    src, dest, _, rng = dense
    x = rng.standard_normal((3, 7, 64)).astype(np.float32)
    ref, got = _run(src, x), _run(dest, x)
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()


def test_a_row_does_not_depend_on_its_batch_mates(dense):
    """One token's outlier (or padding) never moves another token's quantization grid."""
    _, dest, _, rng = dense
    text = rng.standard_normal((1, 5, 64)).astype(np.float32)
    alone = _run(dest, text)
    loud = rng.standard_normal((1, 5, 64)).astype(np.float32) * 1000
    padded = np.concatenate([text, np.zeros((1, 4, 64), np.float32)], axis=1)
    assert np.array_equal(_run(dest, np.concatenate([text, loud]))[0], alone[0])
    assert np.array_equal(_run(dest, padded)[0, :5], alone[0])


def test_an_all_zero_row_gives_the_bias(dense, tmp_path):
    _, dest, _, _ = dense
    bias = onnx.numpy_helper.to_array(next(i for i in onnx.load(str(dest)).graph.initializer if i.name == "b"))
    out = _run(dest, np.zeros((1, 2, 64), np.float32))
    assert np.array_equal(out[0, 0], bias)


def test_smoothing_keeps_the_function(dense, tmp_path):
    """x / s and diag(s) W compute the same product: only the quantization error moves."""
    src, _, _, rng = dense
    factors = rng.uniform(0.5, 2.0, 64).astype(np.float32)
    dest = tmp_path / "smooth.onnx"
    done = quantize.rowwise_int8(src, dest, smooth={"x": factors})
    assert done["smoothed_inputs"] == 1
    x = rng.standard_normal((2, 6, 64)).astype(np.float32)
    ref = _run(src, x)
    assert np.abs(_run(dest, x) - ref).max() < 0.02 * np.abs(ref).max()


def test_smoothing_factors_balance_activations_and_weights():
    act = np.array([100.0, 1.0, 1.0], dtype=np.float32)
    w = np.ones((3, 4), dtype=np.float32)
    s = smoothing.smoothing_factors(act, [w, 2 * w], alpha=0.5)
    assert s[0] > s[1] and s[1] == pytest.approx(s[2])
    assert s[0] == pytest.approx(10 / np.sqrt(2), rel=1e-5)


def test_excluded_layers_stay_fp32(dense, tmp_path):
    src, _, _, _ = dense
    dest = tmp_path / "kept.onnx"
    done = quantize.rowwise_int8(src, dest, exclude=quantize.in_layers([0]))
    assert done["matmuls_int8"] == 0
    assert [n.op_type for n in onnx.load(str(dest)).graph.node] == ["MatMul", "Add"]
    assert quantize.layer_of("/bert/encoder/layer.11/output/dense/MatMul") == 11
    assert quantize.layer_of("/classifier/Gemm") is None


def test_default_export_is_rowwise(tiny_model_dir):
    manifest = orjson.loads((tiny_model_dir / "manifest.json").read_bytes())
    q = manifest["variants"]["int8"]["quantization"]
    assert q["recipe"] == "rowwise"
    assert "per token" in q["activations"]
    assert q["smoothing"]["alpha"] == 0.5
    assert q["operators"] == ["MatMul", "Gather"] and q["embeddings"].startswith("int8")
    assert q["config"] == {
        "recipe": "rowwise",
        "quantize_ops": ["MatMul", "Gather"],
        "fp32_layers": [],
        "smooth": 0.5,
        "isa": "auto",
    }  # the config as given; q["isa"] is what auto became
    ops = {n.op_type for n in onnx.load(str(tiny_model_dir / "model_int8.onnx")).graph.node}
    assert "MatMulIntegerToFloat" in ops
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


def test_per_tensor_recipe_stays_selectable(tiny_checkpoint, tmp_path, sentictl):
    out = tmp_path / "tensor"
    run = sentictl(
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--variants",
        "int8",
        "--int8-recipe",
        "tensor",
        "--fp32-layers",
        "none",
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    q = orjson.loads((out / "manifest.json").read_bytes())["variants"]["int8"]["quantization"]
    assert q["recipe"] == "tensor" and q["fp32_layers"] == []
    assert q["config"] == {"recipe": "tensor", "quantize_ops": ["MatMul"], "fp32_layers": [], "isa": "auto"}
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops
    assert engine.verify(out) == []


def test_unknown_recipe_is_a_usage_error(tiny_checkpoint, tmp_path, sentictl):
    run = sentictl("export", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x"), "--int8-recipe", "blocky")
    assert run.returncode == 2
    assert b"blocky" in run.stderr and b"Traceback" not in run.stderr


def test_cli_recipe_names_match_the_export_package():
    from sentictl.cli import export as cli_export
    from sentictl.export import options

    assert cli_export.INT8_RECIPES == options.INT8_RECIPES == tuple(options.INT8_CONFIGS)
    assert cli_export.DEFAULT_INT8_RECIPE == options.DEFAULT_INT8_RECIPE
    assert cli_export.INT8_ISAS == options.INT8_ISAS


def test_weights_are_narrowed_where_int16_sums_saturate():
    assert quantize.safe_weight_qmax("avx2") == 64  # 2 · 255 · 64 ≤ 32767
    assert quantize.safe_weight_qmax("avx512_vnni") == 127
    assert quantize.safe_weight_qmax("arm64") == 127


def test_rows_get_a_zero_point_of_their_own(tmp_path):
    """One-sided (GELU-like) rows use their whole uint8 range, and stay independent of their batch-mates."""
    rng = np.random.default_rng(1)
    w = rng.integers(-64, 65, (64, 48)).astype(np.float32)
    w[0] = 64
    src = _dense_graph(tmp_path / "fp32.onnx", w / 256, rng.standard_normal(48).astype(np.float32))
    dest = tmp_path / "asym.onnx"
    quantize.rowwise_int8(src, dest, weight_qmax=64)
    ops = [n.op_type for n in onnx.load(str(dest)).graph.node]
    assert "ReduceMin" in ops and "Gemm" in ops  # the row's own minimum, and the zero-point correction
    x = np.abs(rng.standard_normal((2, 9, 64))).astype(np.float32) - 0.1
    ref = _run(src, x)
    assert np.abs(_run(dest, x) - ref).max() < 0.02 * np.abs(ref).max()
    loud = np.concatenate([x[:1], x[1:] * 100])
    assert np.array_equal(_run(dest, loud)[0], _run(dest, x[:1])[0])


def test_rowwise_options_are_recorded(tiny_checkpoint, tmp_path, sentictl):
    out = tmp_path / "plain"
    run = sentictl(
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--variants",
        "int8",
        "--smooth",
        "0",
        "--quantize-ops",
        "MatMul",
        "--fp32-layers",
        "0",
        "--int8-isa",
        "avx2",
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    q = orjson.loads((out / "manifest.json").read_bytes())["variants"]["int8"]["quantization"]
    assert q["smoothing"] is None and q["embeddings"] == "fp32" and q["operators"] == ["MatMul"]
    assert q["fp32_layers"] == [0] and q["fp32_nodes"] == 6  # q, k, v, attention output, FFN in and out
    assert q["isa"] == "avx2" and "±64" in q["weights"]


def test_rowwise_rejects_operators_it_cannot_quantize(tiny_checkpoint, tmp_path, sentictl):
    run = sentictl(
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "x"),
        "--variants",
        "int8",
        "--quantize-ops",
        "MatMul,Attention",
    )
    assert run.returncode == 2  # refused before anything is loaded or written
    assert b"rowwise int8 recipe quantizes MatMul and Gather, not Attention" in run.stderr
    assert b"Traceback" not in run.stderr


def test_int8_built_for_wide_accumulators_is_flagged_on_cpus_without_them():
    from sentictl.engine.cpu import int8_mismatch

    vnni = {"precision": "int8", "quantization": {"recipe": "rowwise", "isa": "avx512_vnni"}}
    assert "--int8-isa avx2" in int8_mismatch(vnni, here="avx2")
    assert "avx512_vnni" in int8_mismatch(vnni, here="avx512")
    assert int8_mismatch(vnni, here="avx512_vnni") is None and int8_mismatch(vnni, here="arm64") is None
    assert int8_mismatch({"precision": "int8", "quantization": {"isa": "arm64"}}, here="avx2")
    portable = {"precision": "int8", "quantization": {"recipe": "rowwise", "isa": "avx2"}}
    assert int8_mismatch(portable, here="avx2") is None
    reduced = {"precision": "int8", "quantization": {"recipe": "tensor", "isa": "avx512_vnni", "reduce_range": True}}
    assert int8_mismatch(reduced, here="avx2") is None
    assert int8_mismatch({"precision": "fp32", "quantization": None}, here="avx2") is None
    assert int8_mismatch({"precision": "int8"}, here="avx2") is None  # manifests before the isa was recorded


def test_score_says_when_the_int8_graph_was_built_for_another_cpu(tiny_checkpoint, tmp_path, sentictl):
    from sentictl.engine.cpu import WIDE_ACCUMULATORS, cpu_isa

    out = tmp_path / "vnni"
    run = sentictl(
        "export", "--model", str(tiny_checkpoint), "--out", str(out), "--variants", "int8", "--int8-isa", "avx512_vnni"
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    run = sentictl("score", "--model-dir", str(out), "--variant", "int8", "--no-cache", input="Shares rose.\n")
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    warned = b"built for avx512_vnni CPUs" in run.stderr
    assert warned == (cpu_isa() not in WIDE_ACCUMULATORS), run.stderr  # this machine decides which is right
    assert b"Traceback" not in run.stderr
