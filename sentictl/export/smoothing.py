"""SmoothQuant-style smoothing for the rowwise int8 recipe: per-channel factors from calibration text.

BERT's LayerNorm outputs carry a few outlier channels that stretch every token's int8 range. A
factor s_j per input channel moves them into the weights (x / s, diag(s) W: exact in fp32), so the
activations quantize with less error (benchmarks/NOTES.md, issue 13). Imports onnx inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .quantize import weight_matmuls


def smoothing_for(
    model_path: Path, tokenizer_path: Path, texts: Sequence[str], exclude: Callable[[str], bool] | None, alpha: float
) -> dict[str, np.ndarray]:
    """Activation name → smoothing factors, for every input of a quantized MatMul (see smoothing_factors)."""
    weights = matmul_inputs(model_path, exclude)
    maxima = calibrate(model_path, tokenizer_path, texts, weights)
    return {x: smoothing_factors(maxima[x], ws, alpha) for x, ws in weights.items()}


def calibrate(
    model_path: Path, tokenizer_path: Path, texts: Sequence[str], names: Iterable[str], max_length: int = 128
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the named activations over the texts' real tokens (fp32 graph).

    Texts run one at a time, so padding never enters the maxima.
    """
    import onnx
    import onnxruntime as ort
    from tokenizers import Tokenizer

    names = list(dict.fromkeys(names))
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # No fusions: the activations asked for must survive as they are named in the graph.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    maxima: dict[str, np.ndarray] = {}
    for enc in tok.encode_batch(list(texts)):
        ids = np.array([enc.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(names, values):
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
    return maxima


def smoothing_factors(act_max: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant: s_j = max|x_j|^α / max|W_j,:|^(1-α), over every weight that reads x."""
    w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    s = np.power(np.maximum(act_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
    factors: np.ndarray = np.clip(s, 1e-2, 1e2).astype(np.float32)
    return factors


def matmul_inputs(model_path: Path, exclude: Callable[[str], bool] | None = None) -> dict[str, list[np.ndarray]]:
    """Activation name → the fp32 weights of every quantizable MatMul that reads it (for smoothing)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    inits = {i.name: i for i in graph.initializer}
    out: dict[str, list[np.ndarray]] = {}
    for node in weight_matmuls(graph):
        if exclude and exclude(node.name):
            continue
        out.setdefault(node.input[0], []).append(numpy_helper.to_array(inits[node.input[1]]))
    return out
