"""The variants an export builds from optimum's raw ONNX graph: fp32, int8, fp16 and CoreML.

Each builder writes one .onnx file into the model directory being built and returns its manifest
entry (the caller adds sha256, size and parity).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.cpu import cpu_isa
from .options import Int8Config, RowwiseInt8, TensorInt8


def build_variant(
    variant: str, raw: Path, work: Path, *, int8: Int8Config, checkpoint: Path, length: int, opset: int | None
) -> dict[str, Any]:
    """Build one variant from the raw export in ``raw`` into ``work``; its manifest entry."""
    if variant == "fp32":
        return _fp32(raw, work)
    if variant == "int8":
        return _int8_rowwise(raw, work, int8) if isinstance(int8, RowwiseInt8) else _int8_tensor(raw, work, int8)
    if variant == "fp16":
        return _fp16(raw, work)
    return _coreml(raw, work, checkpoint, length, opset)


def _optimize(raw: Path, dest: Path, gpu: bool, fp16: bool) -> None:
    import logging

    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    tmp = raw.parent / ("_opt_fp16" if fp16 else "_opt")
    # Optimizing for a GPU on a machine without one is expected here (fp16 is converted on the CPU);
    # ORT logs that as an ERROR, which would only alarm the user.
    logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.CRITICAL)
    optimizer = ORTOptimizer.from_pretrained(raw)
    optimizer.optimize(OptimizationConfig(optimization_level=2, optimize_for_gpu=gpu, fp16=fp16), save_dir=tmp)
    shutil.move(str(tmp / "model_optimized.onnx"), dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _fp32(raw: Path, work: Path) -> dict[str, Any]:
    _optimize(raw, work / "model.onnx", gpu=False, fp16=False)
    return {
        "file": "model.onnx",
        "precision": "fp32",
        "provider": "cpu",
        "quantization": None,
        "optimization": {"level": 2, "fusions": "transformers (attention, layer norm, gelu)"},
    }


def _layer_nodes(model_path: Path, layers: Sequence[int]) -> list[str]:
    """Names of the MatMul/Gather nodes inside the given encoder layers (by their '/layer.N/' path)."""
    import onnx

    from .quantize import in_layers

    inside = in_layers(layers)
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in ("MatMul", "Gather") and inside(node.name)]


def _target_isa(isa: str) -> str:
    """The CPU an int8 graph is built for: this one (auto), or one named for a model shipped elsewhere.

    It matters: x86 CPUs without VNNI add pairs of u8·s8 products in saturating int16, so a graph
    built for VNNI with full-range weights computes wrong sums there. avx2 is safe on every CPU.
    """
    return cpu_isa() if isa == "auto" else isa


def _int8_rowwise(raw: Path, work: Path, cfg: RowwiseInt8) -> dict[str, Any]:
    """Per-token activation scales (sentictl/export/quantize.py): results independent of the batch."""
    from . import quantize

    isa = _target_isa(cfg.isa)
    # Without VNNI, u8·s8 kernels add pairs of products in saturating int16: 7-bit weights avoid it.
    qmax = quantize.safe_weight_qmax(isa)
    matmuls = "MatMul" in cfg.quantize_ops
    exclude = quantize.in_layers(cfg.fp32_layers) if matmuls else (lambda name: True)
    src = raw / "model.onnx"
    smooth = None
    if cfg.smooth:
        from .parity import parity_sentences
        from .smoothing import smoothing_for

        smooth = smoothing_for(src, raw / "tokenizer.json", parity_sentences(), exclude, cfg.smooth)
    # Gather: the word-embedding table as int8 with a scale per vocabulary row, a weight-only change
    # that cost no agreement and no time and takes bert-base's file from 184 to 114 MB.
    # Asymmetric rows (each token's own min..max and zero point): LayerNorm outputs with BERT's
    # one-sided outlier channels and GELU outputs use the whole 8 bits (NOTES.md, issue 13).
    done = quantize.rowwise_int8(
        src,
        work / "model_int8.onnx",
        exclude=exclude,
        smooth=smooth,
        embeddings="Gather" in cfg.quantize_ops,
        weight_qmax=qmax,
    )
    return {
        "file": "model_int8.onnx",
        "precision": "int8",
        "provider": "cpu",
        "quantization": {
            "recipe": "rowwise",
            "mode": "dynamic",
            "isa": isa,
            "per_channel": True,
            "operators": ["MatMul"] + (["Gather"] if done["embeddings_int8"] else []),
            "fp32_layers": list(cfg.fp32_layers),
            "fp32_nodes": len(quantize.weight_matmuls_in(src, exclude)) if cfg.fp32_layers else 0,
            "int8_matmuls": done["matmuls_int8"],
            "weights": f"int8 symmetric, one scale per output column (±{qmax})",
            "activations": "uint8 asymmetric, one range per token computed at run time (batch-independent)",
            "attention_products": "fp32",
            "smoothing": {"alpha": cfg.smooth, "calibration": "built-in parity sentences"} if smooth else None,
            "embeddings": "int8, one scale per vocabulary row" if done["embeddings_int8"] else "fp32",
            "config": cfg.to_manifest(),
        },
    }


def _int8_tensor(raw: Path, work: Path, cfg: TensorInt8) -> dict[str, Any]:
    """The recipe before issue 13: optimum's dynamic quantization, one activation range per run."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    isa = _target_isa(cfg.isa)
    factory = getattr(AutoQuantizationConfig, isa)
    # The first encoder layer is the most sensitive to int8: keeping it in fp32 lifted label
    # agreement with fp32 from 98.2 % to 98.6 % on held-out tweets for ~8 % of the speed on
    # bert-base (benchmarks/NOTES.md).
    excluded = _layer_nodes(raw / "model.onnx", cfg.fp32_layers) if cfg.fp32_layers else []
    kwargs: dict[str, Any] = {
        "is_static": False,
        "per_channel": True,
        "operators_to_quantize": list(cfg.quantize_ops),
        "nodes_to_exclude": excluded or None,
    }
    if isa in ("avx2", "avx512"):
        # Without VNNI, u8s8 dot products can saturate; reduced range avoids it.
        kwargs["reduce_range"] = True
    qconfig = factory(**kwargs)
    tmp = work / "_int8"
    # Quantize the unfused graph: ORT fuses the quantized MatMuls itself at load time.
    ORTQuantizer.from_pretrained(raw).quantize(qconfig, save_dir=tmp)
    shutil.move(str(tmp / "model_quantized.onnx"), work / "model_int8.onnx")
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "file": "model_int8.onnx",
        "precision": "int8",
        "provider": "cpu",
        "quantization": {
            "recipe": "tensor",
            "mode": "dynamic",
            "isa": isa,
            "per_channel": True,
            "operators": list(cfg.quantize_ops),
            "fp32_layers": list(cfg.fp32_layers),
            "fp32_nodes": len(excluded),
            "weights": "int8 symmetric",
            "activations": "uint8 asymmetric, per tensor, computed at run time (depends on the batch)",
            "reduce_range": kwargs.get("reduce_range", False),
            "config": cfg.to_manifest(),
        },
    }


def _fp16(raw: Path, work: Path) -> dict[str, Any]:
    _optimize(raw, work / "model_fp16.onnx", gpu=True, fp16=True)
    return {
        "file": "model_fp16.onnx",
        "precision": "fp16",
        "provider": "cuda",
        "quantization": None,
        "optimization": {"level": 2, "for_gpu": True, "fp16": True, "io_types": "fp32 (kept)"},
    }


def _coreml(raw: Path, work: Path, checkpoint: Path, length: int, opset: int | None) -> dict[str, Any]:
    from optimum.exporters.onnx import main_export

    # CoreML cannot compile dynamic shapes, so the graph is exported with fixed [1, max_length]
    # inputs and left unfused: ORT's fused contrib ops (Attention, SkipLayerNorm) have no CoreML
    # kernels. The 30,522-row word-embedding Gather exceeds CoreML's 16,384 dimension limit and
    # runs on the CPU provider; everything after it can run on CoreML.
    tmp = work / "_coreml"
    main_export(
        str(checkpoint),
        tmp,
        task="text-classification",
        opset=opset,
        do_validation=False,
        local_files_only=True,
        no_dynamic_axes=True,
        batch_size=1,
        sequence_length=length,
    )
    shutil.move(str(tmp / "model.onnx"), work / "model_coreml.onnx")
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "file": "model_coreml.onnx",
        "precision": "fp32",
        "provider": "coreml",
        "quantization": None,
        "static_shape": [1, length],
        "optimization": {"level": 0, "note": "static shapes, standard ONNX ops only (no ORT contrib fusions)"},
    }
