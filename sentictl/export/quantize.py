"""Row-wise int8: one activation scale per token, so a text's result never depends on its batch-mates.

ONNX Runtime's dynamic quantization (DynamicQuantizeLinear, fused at load time into
DynamicQuantizeMatMul) picks one uint8 range for a whole [batch, seq, hidden] tensor: one text's
outlier, or the padding and length of the texts it shares a run with, moves every other text's
quantization grid. This module rewrites each MatMul with a constant weight W [K, N] instead as

    hi, lo = max(max_K x, 0), min(min_K x, 0)       each token row's own range (zero included)
    s  = (hi - lo) / 255,  z = round(-lo / s)       one scale and one uint8 zero point per row
    xq = uint8(round(x / s) + z)                    so that ORT's u8·s8 (VNNI) GEMM kernels run
    y  = MatMulIntegerToFloat(xq, Wq, s, w_scale) - s·z ⊗ colsum(Wq·w_scale)
                                                    W as int8, one scale per output column

Every token row is quantized on its own, so the integer products are exactly the same whatever
else is in the batch. The attention products (Q·Kᵀ, softmax·V) have no constant weight and stay in
fp32; so do the pooler and classifier (Gemm, one row per text).

Each token row is quantized over its own [min, max] with a zero point of its own (asymmetric: twice
the resolution for one-sided inputs such as GELU outputs), paid for with one rank-1 correction per
output. Optional, measured in benchmarks/NOTES.md (issue 13):
- ``smooth``: SmoothQuant-style factors that move BERT's outlier channels from the activations
  into the weights (x / s, diag(s) W: exact in fp32), from per-channel maxima on calibration text;
- ``embeddings``: the word-embedding table as int8 with one scale per vocabulary row
  (a weight-only change: no activation is quantized, so it cannot depend on the batch).

The rejected alternatives (symmetric rows, elementwise quantizers, unsigned weights, 7-bit
activations) live in benchmarks/quant_experiments.py. Imports onnx (export extra) inside functions,
like the rest of sentictl.export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ExportError
from .splice import MS_DOMAIN, finish_graph

_LAYER = re.compile(r"/layer\.(\d+)/")


def layer_of(node_name: str) -> int | None:
    """The encoder layer a node belongs to, from optimum's '/layer.N/' node names."""
    m = _LAYER.search(node_name)
    return int(m.group(1)) if m else None


def weight_matmuls(graph: Any, nodes: Sequence[Any] | None = None) -> list[Any]:
    """MatMul nodes whose second input is a constant 2-D float weight (the dense layers)."""
    from onnx import TensorProto

    inits = {i.name: i for i in graph.initializer}
    out = []
    for node in graph.node if nodes is None else nodes:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if len(w.dims) == 2 and w.data_type == TensorProto.FLOAT:
            out.append(node)
    return out


def safe_weight_qmax(isa: str | None = None) -> int:
    """The widest int8 weight range whose u8·s8 products cannot saturate on this CPU (None: this one).

    Without VNNI (AVX2, AVX-512F), x86 int8 GEMMs add pairs of u8·s8 products in saturating int16
    (vpmaddubsw): 2 · 255 · 127 overflows 32767, 2 · 255 · 64 does not. VNNI and ARM accumulate in int32.
    """
    from ..engine.cpu import WIDE_ACCUMULATORS, cpu_isa

    return 127 if (isa or cpu_isa()) in WIDE_ACCUMULATORS else 32767 // (2 * 255)


def quantize_weight(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8, one scale per output column: (Wq [K, N] int8, scale [N] float32)."""
    scale = np.abs(w).max(axis=0) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
    return q, scale


def rowwise_int8(
    src: Path,
    dest: Path,
    *,
    exclude: Callable[[str], bool] | None = None,
    smooth: dict[str, np.ndarray] | None = None,
    embeddings: bool = False,
    weight_qmax: int | None = None,
) -> dict[str, Any]:
    """Rewrite the fp32 graph ``src`` into row-wise int8 at ``dest``; returns what was done.

    ``exclude(node_name)``: MatMuls left in fp32. ``smooth``: activation name → per-channel factors
    (see smoothing.py). ``embeddings``: the word-embedding table as int8. ``weight_qmax`` (None: for
    this CPU, see safe_weight_qmax) bounds the int8 weights.
    """
    import onnx
    from onnx import helper

    if weight_qmax is None:
        weight_qmax = safe_weight_qmax()
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    # Nodes are identified by position: protobuf wrappers are not stable objects to key on.
    nodes_in = list(graph.node)
    position = {id(n): k for k, n in enumerate(nodes_in)}
    targets = [n for n in weight_matmuls(graph, nodes_in) if not (exclude and exclude(n.name))]
    by_input: dict[str, list[Any]] = {}
    for node in targets:
        by_input.setdefault(node.input[0], []).append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    if opset < 13:
        raise ExportError(f"row-wise int8 needs opset 13 or later (per-row QuantizeLinear), not {opset}")

    new_inits: list[Any] = []
    const = Consts(new_inits)
    replaced: dict[int, list[Any]] = {}  # position of an original node -> the nodes that replace it
    dropped: set[str] = set()
    for x, consumers in by_input.items():
        rewritten = _quantize_consumers(
            x, consumers, (smooth or {}).get(x), inits, weight_qmax, opset, const, new_inits
        )
        for node, nodes in zip(consumers, rewritten):
            replaced[position[id(node)]] = nodes
            dropped.add(node.input[1])
    if embeddings:
        replaced.update(int8_embeddings(nodes_in, inits, new_inits, dropped))

    out_nodes, fused = finish_graph(model, replaced, new_inits, dropped)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dest))
    return {
        "matmuls_int8": len(targets),
        "row_quantizers": len(by_input),
        "smoothed_inputs": sum(1 for x in by_input if smooth and x in smooth),
        "skip_layer_norms": fused,
        "embeddings_int8": any(n.op_type == "Gather" and n.name.endswith("GatherInt8") for n in out_nodes),
    }


def smoothed_input(x: str, prefix: str, factors: np.ndarray | None, const: Any) -> tuple[list[Any], str]:
    """The node dividing activation ``x`` by its SmoothQuant factors (none without factors), and the name
    the row quantizer then reads."""
    from onnx import helper

    if factors is None:
        return [], x
    scaled = const.array(f"{prefix}smooth_inv", (1.0 / factors).astype(np.float32))
    node = helper.make_node("Mul", [x, scaled], [f"{prefix}smoothed"], name=f"{prefix}Smooth")
    return [node], f"{prefix}smoothed"


def _quantize_consumers(
    x: str,
    consumers: list[Any],
    factors: np.ndarray | None,
    inits: dict[str, Any],
    weight_qmax: int,
    opset: int,
    const: Consts,
    new_inits: list[Any],
) -> list[list[Any]]:
    """The nodes that replace each MatMul reading ``x``: one row quantizer (with the first), then each int8 product."""
    from onnx import numpy_helper

    prefix = node_prefix(consumers[0].name)
    nodes, src_x = smoothed_input(x, prefix, factors, const)
    k = int(inits[consumers[0].input[1]].dims[0])
    q_nodes, *outputs = asymmetric_rows(src_x, prefix, k, opset, const)
    nodes += q_nodes
    rows = RowsQuantized(*outputs)
    out: list[list[Any]] = []
    for node in consumers:
        w = numpy_helper.to_array(inits[node.input[1]])
        if factors is not None:
            w = w * factors[:, None]
        out.append((nodes if not out else []) + int8_matmul(node, w, weight_qmax, rows, const, new_inits))
    return out


class RowsQuantized(NamedTuple):
    """The outputs of a row quantizer (see asymmetric_rows) that an int8 MatMul reads."""

    quantized: str  # uint8 [tokens, K]
    row_scale: str  # [tokens, 1]
    lead: str  # the activation's leading shape, to restore after the GEMM
    correction: str  # scale·zero point [tokens, 1]


def int8_matmul(
    node: Any, w: np.ndarray, weight_qmax: int, rows: RowsQuantized, const: Consts, new_inits: list[Any]
) -> list[Any]:
    """MatMul(x, W) → MatMulIntegerToFloat on the quantized rows, the zero-point correction and the unflatten."""
    from onnx import helper, numpy_helper

    wq, ws = quantize_weight(w, weight_qmax)
    base = node_prefix(node.name)
    wq_name, ws_name = f"{base}weight_int8", f"{base}weight_scale"
    new_inits += [numpy_helper.from_array(wq, wq_name), numpy_helper.from_array(ws, ws_name)]
    inputs = [rows.quantized, wq_name, rows.row_scale, ws_name, const.zero_point(0)]
    n = int(wq.shape[1])
    # Σ (q − zp)·w = Σ q·w − zp·colsum(w): a rank-1 update, one Gemm with K = 1.
    colsum = -(wq.astype(np.int64).sum(axis=0) * ws).astype(np.float32)[None, :]
    new_inits.append(numpy_helper.from_array(colsum, f"{base}neg_colsum"))
    return [
        helper.make_node(
            "MatMulIntegerToFloat", inputs, [f"{base}rows_raw"], name=f"{base}MatMulIntegerToFloat", domain=MS_DOMAIN
        ),
        helper.make_node(
            "Gemm",
            [rows.correction, f"{base}neg_colsum", f"{base}rows_raw"],
            [f"{base}rows_out"],
            name=f"{base}ZeroPointCorrection",
        ),
        # [tokens, N] back to the activation's leading shape.
        helper.make_node(
            "Concat",
            [rows.lead, const.array(f"rowq_dim_{n}", np.array([n], dtype=np.int64))],
            [f"{base}out_shape"],
            name=f"{base}OutShape",
            axis=0,
        ),
        helper.make_node(
            "Reshape", [f"{base}rows_out", f"{base}out_shape"], list(node.output), name=f"{base}Unflatten"
        ),
    ]


def int8_embeddings(
    nodes: list[Any], inits: dict[str, Any], new_inits: list[Any], dropped: set[str]
) -> dict[int, list[Any]]:
    """The word-embedding Gather reads an int8 table with one scale per row (per vocabulary entry)."""
    from onnx import TensorProto, helper, numpy_helper

    out: dict[int, list[Any]] = {}
    for k, node in enumerate(nodes):
        if node.op_type != "Gather" or node.input[0] not in inits or "word_embeddings" not in node.input[0]:
            continue
        table = numpy_helper.to_array(inits[node.input[0]])
        if table.ndim != 2:
            continue
        q_t, scale_t = quantize_weight(table.T)  # one scale per vocabulary row
        q, scale = np.ascontiguousarray(q_t.T), scale_t[:, None]
        p = node_prefix(node.name)
        new_inits += [numpy_helper.from_array(q, f"{p}table_int8"), numpy_helper.from_array(scale, f"{p}row_scale")]
        dropped.add(node.input[0])
        ids = node.input[1]
        out[k] = [
            helper.make_node("Gather", [f"{p}table_int8", ids], [f"{p}rows_int8"], name=f"{p}GatherInt8", axis=0),
            helper.make_node("Gather", [f"{p}row_scale", ids], [f"{p}rows_scale"], name=f"{p}GatherScale", axis=0),
            helper.make_node("Cast", [f"{p}rows_int8"], [f"{p}rows_float"], name=f"{p}CastRows", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}rows_float", f"{p}rows_scale"], list(node.output), name=f"{p}Dequantize"),
        ]
    return out


def asymmetric_rows(x: str, p: str, k: int, opset: int, const: Consts) -> tuple[list[Any], str, str, str, str]:
    """x [..., K] → uint8 [tokens, K] over each row's own [min, max] (zero included) in 0..255, the
    row scales [tokens, 1], the leading shape, and scale·zero point [tokens, 1] for the correction."""
    from onnx import TensorProto, helper

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
            "Mul", [f"{p}span_safe", const.scalar("inv_255", 1.0 / 255)], [f"{p}scale"], name=f"{p}RowScale"
        ),
        helper.make_node("Div", [f"{p}lo", f"{p}scale"], [f"{p}lo_steps"], name=f"{p}LoSteps"),
        helper.make_node("Neg", [f"{p}lo_steps"], [f"{p}zp_raw"], name=f"{p}ZeroPointRaw"),
        helper.make_node("Round", [f"{p}zp_raw"], [f"{p}zp_round"], name=f"{p}ZeroPointRound"),
        helper.make_node(
            "Clip", [f"{p}zp_round", zero_f, const.scalar("u8_max", 255.0)], [f"{p}zp_f"], name=f"{p}ZeroPointClip"
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


def reduce_last(op: str, src: str, dest: str, name: str, opset: int, const: Consts, keepdims: int) -> Any:
    """ReduceMax/ReduceMin over the last axis: axes became an input in opset 18."""
    from onnx import helper

    if opset >= 18:
        return helper.make_node(op, [src, const.axes_last()], [dest], name=name, keepdims=keepdims)
    return helper.make_node(op, [src], [dest], name=name, axes=[-1], keepdims=keepdims)


def flatten_rows(x: str, p: str, k: int, const: Consts) -> list[Any]:
    """x [..., K] → rows [tokens, K] (``{p}rows``), keeping x's leading shape (``{p}lead``) to restore later."""
    from onnx import helper

    return [
        helper.make_node("Shape", [x], [f"{p}shape"], name=f"{p}Shape"),
        helper.make_node(
            "Slice",
            [
                f"{p}shape",
                const.array("rowq_zero_i64", np.array([0], dtype=np.int64)),
                const.array("rowq_minus1_i64", np.array([-1], dtype=np.int64)),
            ],
            [f"{p}lead"],
            name=f"{p}Lead",
        ),
        helper.make_node(
            "Reshape",
            [x, const.array(f"rowq_flat_{k}", np.array([-1, k], dtype=np.int64))],
            [f"{p}rows"],
            name=f"{p}Flatten",
        ),
    ]


def node_prefix(node_name: str) -> str:
    """'/bert/encoder/layer.0/attention/self/query/MatMul' → '/bert/encoder/layer.0/attention/self/query/rowq_'."""
    head, _, _ = node_name.rpartition("/")
    return f"{head}/rowq_"


class Consts:
    """Shared scalar initializers, created once per graph."""

    def __init__(self, sink: list[Any]):
        self.sink = sink
        self.made: set[str] = set()

    def _add(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self.made:
            self.made.add(name)
            self.sink.append(numpy_helper.from_array(value, name))
        return name

    def scalar(self, name: str, value: float) -> str:
        return self._add(f"rowq_{name}", np.array(value, dtype=np.float32))

    def array(self, name: str, value: np.ndarray) -> str:
        return self._add(name, value)

    def axes_last(self) -> str:
        return self._add("rowq_axes_last", np.array([-1], dtype=np.int64))

    def zero_point(self, value: int) -> str:
        return self._add(f"rowq_zero_point_{value}", np.array(value, dtype=np.uint8))


def weight_matmuls_in(model_path: Path, only: Callable[[str], bool]) -> list[str]:
    """Names of the dense MatMuls of a model file that ``only`` selects (e.g. the fp32 layers)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in weight_matmuls(graph) if only(n.name)]


def in_layers(layers: Collection[int]) -> Callable[[str], bool]:
    """A node filter: True for nodes inside the given encoder layers."""
    wanted = set(layers)
    return lambda name: (layer := layer_of(name)) is not None and layer in wanted
