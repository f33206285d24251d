"""Graph surgery after the row-wise int8 rewrite (quantize.py): the replacement nodes go in place of
the MatMuls they replace, Add → Add → LayerNormalization chains become ORT's SkipLayerNormalization,
and the fp32 weights nothing reads any more leave the initializers. Imports onnx inside functions.
"""

from __future__ import annotations

from typing import Any

# The domain of ONNX Runtime's contrib operators (MatMulIntegerToFloat, SkipLayerNormalization).
MS_DOMAIN = "com.microsoft"


def finish_graph(
    model: Any, replaced: dict[int, list[Any]], new_inits: list[Any], dropped: set[str]
) -> tuple[list[Any], int]:
    """Put the replacement nodes in place of the originals (by position), fuse SkipLayerNorms and swap the
    initializers; returns the new node list and how many SkipLayerNormalizations were fused."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    out_nodes = []
    for k, node in enumerate(list(graph.node)):
        out_nodes.extend(replaced.get(k, [node]))
    out_nodes, fused = fuse_skip_layer_norm(out_nodes, inits, {o.name for o in graph.output})
    # Weights still read by a node left in fp32 (an excluded MatMul sharing a tensor) are kept.
    still_read = {i for n in out_nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in still_read]
    del graph.node[:]
    graph.node.extend(out_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out_nodes, fused


def fuse_skip_layer_norm(nodes: list[Any], inits: dict[str, Any], outputs: set[str]) -> tuple[list[Any], int]:
    """Add(bias, y) → Add(·, residual) → LayerNormalization becomes one SkipLayerNormalization.

    ORT fuses this itself for the DynamicQuantizeMatMul graph but not after MatMulIntegerToFloat
    (whose bias input cannot be used with per-row scales: ORT scales the bias by the row scale too),
    and the unfused form costs two extra passes over every layer's output.
    """
    from onnx import helper

    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    drop: set[int] = set()
    swap: dict[int, Any] = {}
    for ln in nodes:
        if ln.op_type != "LayerNormalization" or ln.domain not in ("", "ai.onnx") or len(ln.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in ln.attribute}
        if attrs.get("axis", -1) != -1 or len(ln.output) > 1:
            continue
        outer = producer.get(ln.input[0])
        if outer is None or outer.op_type != "Add" or uses.get(outer.output[0]) != 1 or outer.output[0] in outputs:
            continue
        for side in (0, 1):
            inner = producer.get(outer.input[side])
            if inner is None or inner.op_type != "Add" or uses.get(inner.output[0]) != 1 or id(inner) in drop:
                continue
            biases = [i for i in inner.input if i in inits and len(inits[i].dims) == 1]
            if len(biases) != 1 or inner.output[0] in outputs:
                continue
            bias = biases[0]
            value = next(i for i in inner.input if i != bias)
            beta = ln.input[2] if len(ln.input) > 2 else ""
            swap[id(ln)] = helper.make_node(
                "SkipLayerNormalization",
                [value, outer.input[1 - side], ln.input[1], beta, bias],
                list(ln.output),
                name=f"{ln.name}_skip",
                domain=MS_DOMAIN,
                epsilon=float(attrs.get("epsilon", 1e-5)),
            )
            drop |= {id(inner), id(outer)}
            break
    out = [swap.get(id(n), n) for n in nodes if id(n) not in drop]
    return out, len(swap)
