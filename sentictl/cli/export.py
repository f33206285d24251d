"""`sentictl export`: a checkpoint to an ONNX model directory (the export stack loads inside)."""

from __future__ import annotations

from typing import Any

import click

from .. import config
from ..console import notice
from .options import CONTEXT, opt


@click.command("export", context_settings=CONTEXT)
@opt("--model", "model", env="EXPORT_MODEL", default=config.DEFAULT_HUB_MODEL,
     help="Hugging Face hub id or a local checkpoint directory.")
@opt("--revision", env="EXPORT_REVISION", default=None, help="Hub revision (branch, tag or commit) to export.")
@opt("--out", env="EXPORT_OUT", type=click.Path(file_okay=False), default=None,
     help="Model directory to write. Default: models/<model name>, e.g. models/finbert.")
@opt("--variants", env="EXPORT_VARIANTS", default="auto",
     help="auto (fp32,int8), all, or a comma list of fp32,int8,fp16,coreml. fp32 is always built.")
@opt("--max-length", env="EXPORT_MAX_LENGTH", type=click.IntRange(min=8), default=None,
     help="Maximum tokens per text (default: the checkpoint's limit, 512 for FinBERT).")
@opt("--opset", env="EXPORT_OPSET", type=click.IntRange(min=11), default=None, help="ONNX opset (default: optimum's choice).")
@opt("--eval-data", env="EXPORT_EVAL_DATA", type=click.Path(exists=True, dir_okay=False), default=None,
     help="Labelled CSV (label,text) to measure each variant's accuracy.")
@opt("--max-drop", env="EXPORT_MAX_DROP", type=click.FloatRange(min=0), default=1.0,
     help="With --eval-data: mark a variant unusable if it loses more accuracy points than this vs fp32.")
@opt("--keep", env="EXPORT_KEEP", default=None,
     help="Comma list of variants whose files stay in the directory (default: all built); "
           "the others keep only their figures in the manifest. E.g. --keep int8 for a small bundle.")
@opt("--quantize-ops", default="MatMul",
     help="int8: ONNX operator types to quantize, comma separated (MatMul keeps accuracy; "
           "MatMul,Gather also shrinks the embedding table 4x).")
@opt("--fp32-layers", default="0",
     help="int8: encoder layers (comma list of indices, or 'none') left in fp32. The first layer is "
           "the most sensitive to quantization; keeping it lifts agreement with fp32 for ~8% speed.")
@opt("--force", is_flag=True, help="Replace an existing model directory.")
def export(**opts: Any) -> None:
    """Export a checkpoint to an ONNX model directory (needs the export extra).

    Downloads (or loads) the checkpoint, exports it with optimum, optimizes the graph, builds the
    requested variants (int8: dynamic per-channel quantization for this CPU; fp16: for CUDA;
    coreml: static shapes for Apple's CoreML provider), checks fp32 against PyTorch on 50
    built-in sentences and writes manifest.json, tokenizer.json and the .onnx files.

    \b
    Exit status: 0 the model folder was written; 1 it could not be (checkpoint, parity, an unsafe
    --out, a full disk); 2 usage error; 130 interrupted.

    \b
    Examples:
     sentictl export                                  # ProsusAI/finbert → models/finbert
     sentictl export --model ./my-checkpoint --out models/mine --variants all
     sentictl export --eval-data labelled.csv --max-drop 0.5
    """
    from ..export import run_export

    manifest = run_export(
        model=opts["model"], revision=opts["revision"], out=opts["out"], variants=opts["variants"],
        max_length=opts["max_length"], opset=opts["opset"], eval_data=opts["eval_data"],
        max_drop=opts["max_drop"], force=opts["force"], keep=opts["keep"],
        quantize_ops=[op.strip() for op in opts["quantize_ops"].split(",") if op.strip()],
        fp32_layers=_layers(opts["fp32_layers"]),
    )
    from ..export import resolve_out

    out = resolve_out(opts["model"], opts["out"])  # the folder run_export wrote, absolute
    notice(f"wrote {out} ({', '.join(manifest['variants'])})")


def _layers(spec: str) -> list[int]:
    """'0,11' → [0, 11]; 'none' or '' → []."""
    if not spec or spec.strip().lower() == "none":
        return []
    try:
        return sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(f"{spec!r}: use layer indices like 0 or 0,11, or 'none'", param_hint="--fp32-layers") from None
