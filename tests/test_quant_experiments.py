"""benchmarks/quant_experiments.py keeps the rejected row-wise variants runnable, on top of the product's pieces."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentictl.export import quantize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "quant_experiments.py"


@pytest.fixture(scope="module")
def qx():
    spec = importlib.util.spec_from_file_location("quant_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dense_graph(path, w, bias):
    """x [B, S, K] → MatMul(W) + bias, as optimum writes a BERT dense layer."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["mm"], name="/enc/layer.0/dense/MatMul"),
            helper.make_node("Add", ["b", "mm"], ["y"], name="/enc/layer.0/dense/Add"),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", w.shape[0]])],
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


def test_help_runs():
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, timeout=120, check=False)
    assert run.returncode == 0 and b"speed" in run.stdout


def test_the_winning_settings_write_the_products_graph(qx, tmp_path):
    """With the settings the product kept, the experiment rewriter writes byte for byte the product's graph."""
    rng = np.random.default_rng(0)
    src = _dense_graph(
        tmp_path / "fp32.onnx",
        (rng.standard_normal((64, 48)) * 0.1).astype(np.float32),
        rng.standard_normal(48).astype(np.float32),
    )
    factors = {"x": rng.uniform(0.5, 2.0, 64).astype(np.float32)}
    quantize.rowwise_int8(src, tmp_path / "product.onnx", smooth=factors, weight_qmax=64)
    qx.rowwise_int8_experiment(
        src,
        tmp_path / "experiment.onnx",
        smooth=factors,
        weight_qmax=64,
        quantizer="qlinear",
        asymmetric=lambda name: True,
    )
    assert (tmp_path / "product.onnx").read_bytes() == (tmp_path / "experiment.onnx").read_bytes()


@pytest.mark.parametrize(
    "settings",
    [
        {"quantizer": "elementwise"},
        {"quantizer": "qlinear"},
        {"quantizer": "qlinear", "asymmetric": lambda name: True, "unsigned_weights": True},
        {"quantizer": "qlinear", "asymmetric": lambda name: True, "activation_qmax": 63},
    ],
    ids=["elementwise", "symmetric-qlinear", "unsigned-weights", "seven-bit-rows"],
)
def test_rejected_variants_still_build_close_batch_independent_graphs(qx, tmp_path, settings):
    rng = np.random.default_rng(2)
    w = rng.integers(-127, 128, (64, 48)).astype(np.float32)
    w[0] = 127
    src = _dense_graph(tmp_path / "fp32.onnx", w / 256, rng.standard_normal(48).astype(np.float32))
    dest = tmp_path / "int8.onnx"
    qmax = qx.safe_weight_qmax_for(settings.get("activation_qmax", 127), "avx2")
    done = qx.rowwise_int8_experiment(src, dest, weight_qmax=qmax, **settings)
    assert done["matmuls_int8"] == 1
    x = rng.standard_normal((2, 7, 64)).astype(np.float32)
    ref = _run(src, x)
    assert np.abs(_run(dest, x) - ref).max() < 0.02 * np.abs(ref).max()
    loud = np.concatenate([x[:1], x[1:] * 100])
    assert np.array_equal(_run(dest, loud)[0], _run(dest, x[:1])[0])


def test_seven_bit_rows_allow_full_weights_within_int16(qx, tmp_path):
    assert qx.safe_weight_qmax_for(63, "avx2") == 127  # 2 · 127 · 127 ≤ 32767
    assert qx.safe_weight_qmax_for(127, "avx2") == quantize.safe_weight_qmax("avx2") == 64
    rng = np.random.default_rng(3)
    src = _dense_graph(
        tmp_path / "fp32.onnx", rng.standard_normal((64, 48)).astype(np.float32), np.zeros(48, np.float32)
    )
    dest = tmp_path / "a63.onnx"
    qx.rowwise_int8_experiment(
        src, dest, quantizer="qlinear", asymmetric=lambda name: True, activation_qmax=63, weight_qmax=127
    )
    names = {i.name for i in onnx.load(str(dest)).graph.initializer}
    assert {"rowq_inv_127", "rowq_u8_max_127"} <= names and "rowq_inv_255" not in names


def test_asymmetric_rows_halve_the_error_of_symmetric_ones_on_one_sided_inputs(qx, tmp_path):
    rng = np.random.default_rng(1)
    w = rng.integers(-64, 65, (64, 48)).astype(np.float32)
    w[0] = 64
    src = _dense_graph(tmp_path / "fp32.onnx", w / 256, rng.standard_normal(48).astype(np.float32))
    sym, asym = tmp_path / "sym.onnx", tmp_path / "asym.onnx"
    qx.rowwise_int8_experiment(src, sym, quantizer="qlinear", weight_qmax=64)
    quantize.rowwise_int8(src, asym, weight_qmax=64)
    x = np.abs(rng.standard_normal((2, 9, 64))).astype(np.float32) - 0.1
    ref = _run(src, x)
    assert np.abs(_run(asym, x) - ref).mean() < 0.7 * np.abs(_run(sym, x) - ref).mean()
