"""`sentictl export`: a checkpoint to an ONNX model directory (the export stack loads inside)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from .. import config
from ..console import notice
from .options import CONTEXT, opt

if TYPE_CHECKING:
    from ..export.options import ExportOptionError, ExportOptions

# The same names as sentictl.export.options (a test checks): importing the export package here
# would add ~0.2 s to every command's start.
INT8_RECIPES = ("rowwise", "tensor")
DEFAULT_INT8_RECIPE = "rowwise"
INT8_ISAS = ("auto", "avx2", "avx512", "avx512_vnni", "arm64")


@click.command("export", context_settings=CONTEXT)
@opt(
    "--model",
    "model",
    env="EXPORT_MODEL",
    default=config.DEFAULT_HUB_MODEL,
    help="Hugging Face hub id or a local checkpoint directory.",
)
@opt("--revision", env="EXPORT_REVISION", default=None, help="Hub revision (branch, tag or commit) to export.")
@opt(
    "--out",
    env="EXPORT_OUT",
    type=click.Path(file_okay=False),
    default=None,
    help="Model directory to write. Default: models/<model name>, e.g. models/finbert.",
)
@opt(
    "--variants",
    env="EXPORT_VARIANTS",
    default="auto",
    help="auto (fp32,int8), all, or a comma list of fp32,int8,fp16,coreml. fp32 is always built.",
)
@opt(
    "--max-length",
    env="EXPORT_MAX_LENGTH",
    type=click.IntRange(min=8),
    default=None,
    help="Maximum tokens per text (default: the checkpoint's limit, 512 for FinBERT).",
)
@opt(
    "--opset",
    env="EXPORT_OPSET",
    type=click.IntRange(min=11),
    default=None,
    help="ONNX opset (default: optimum's choice).",
)
@opt(
    "--eval-data",
    env="EXPORT_EVAL_DATA",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Labelled CSV (label,text) to measure each variant's accuracy.",
)
@opt(
    "--max-drop",
    env="EXPORT_MAX_DROP",
    type=click.FloatRange(min=0),
    default=1.0,
    help="With --eval-data: mark a variant unusable if it loses more accuracy points than this vs fp32.",
)
@opt(
    "--keep",
    env="EXPORT_KEEP",
    default=None,
    help="Comma list of variants whose files stay in the directory (default: all built); "
    "the others keep only their figures in the manifest. E.g. --keep int8 for a small bundle.",
)
@opt(
    "--int8-recipe",
    env="EXPORT_INT8_RECIPE",
    type=click.Choice(INT8_RECIPES),
    default=DEFAULT_INT8_RECIPE,
    help="int8: rowwise gives every token its own activation scale, so a text's result never depends on "
    "the texts batched with it (or on --run-tokens); tensor is the earlier recipe: one activation "
    "range per inference run (ORT dynamic quantization), so results move with the batch. "
    "E.g. --int8-recipe tensor --fp32-layers 0 rebuilds the old default.",
)
@opt(
    "--quantize-ops",
    env="EXPORT_QUANTIZE_OPS",
    default=None,
    show_default="MatMul,Gather for rowwise, MatMul for tensor",
    help="int8: ONNX operator types to quantize, comma separated: MatMul (the dense layers) and Gather "
    "(the word-embedding table as int8, 4x smaller; rowwise gives each vocabulary row its own scale).",
)
@opt(
    "--fp32-layers",
    env="EXPORT_FP32_LAYERS",
    default=None,
    show_default="none for rowwise, 0 for tensor",
    help="int8: encoder layers left in fp32, a comma list of indices (e.g. 0 or 0,11) or 'none'.",
)
@opt(
    "--smooth",
    "smooth_alpha",
    env="EXPORT_SMOOTH",
    type=click.FloatRange(0, 1),
    default=None,
    show_default="0.5",
    help="int8 rowwise: SmoothQuant strength: move activation outlier channels into the weights (exact in "
    "fp32), using per-channel maxima measured on the built-in parity sentences. 0 turns it off.",
)
@opt(
    "--int8-isa",
    env="EXPORT_INT8_ISA",
    type=click.Choice(INT8_ISAS),
    default="auto",
    help="int8: the CPU the graph is built for. auto: this machine. A model that will run on other "
    "machines should say avx2: CPUs without VNNI add int8 products in saturating 16-bit sums, so "
    "a graph built for VNNI computes wrong results on them; avx2's narrower weights are safe everywhere.",
)
@opt(
    "--external-data/--single-file",
    "external_data",
    env="EXPORT_EXTERNAL_DATA",
    default=True,
    help="Write each fp32/int8/fp16 variant as the graph (model_int8.onnx) plus its weights in one "
    "page-aligned file beside it (model_int8.onnx.data), ONNX's external-data form: ONNX Runtime "
    "maps the weights instead of copying them, which halves the memory a model takes to load "
    "(serve of bert-base int8 peaks at ~280 MB instead of ~312 MB). Both files are hashed in the manifest; keep "
    "them together. --single-file writes one self-contained .onnx per variant (CoreML always is).",
)
@opt("--force", is_flag=True, help="Replace an existing model directory.")
def export(**opts: Any) -> None:
    """Export a checkpoint to an ONNX model directory (needs the export extra).

    \b
    Install the extra with PyTorch's CPU build (without the index, pip fetches the multi-GB CUDA one):
     pip install 'sentictl[export]' --extra-index-url https://download.pytorch.org/whl/cpu

    Downloads (or loads) the checkpoint, exports it with optimum, optimizes the graph, builds the
    requested variants (int8: per-channel int8 weights, per-token activation scales computed at
    run time for this CPU; fp16: for CUDA;
    coreml: static shapes for Apple's CoreML provider), checks fp32 against PyTorch on 50
    built-in sentences and writes manifest.json, tokenizer.json and the .onnx files (each with its
    weights in a .onnx.data file beside it unless --single-file).

    \b
    Exit status: 0 the model folder was written; 1 it could not be (the export extra is not
    installed, checkpoint, parity, an unsafe --out, a full disk); 2 usage error; 130 interrupted.

    \b
    Examples:
     sentictl export                                  # ProsusAI/finbert → models/finbert
     sentictl export --model ./my-checkpoint --out models/mine --variants all
     sentictl export --eval-data labelled.csv --max-drop 0.5
    """
    from ..export import ExportOptionError, resolve_out, run_export

    ctx = click.get_current_context()
    try:
        options = _export_options(ctx, opts)
    except ExportOptionError as exc:
        raise click.UsageError(_with_sources(ctx, exc)) from None
    manifest = run_export(options)
    out = resolve_out(opts["model"], opts["out"])  # the folder run_export wrote, absolute
    notice(f"wrote {out} ({', '.join(manifest['variants'])})")


def _export_options(ctx: click.Context, opts: dict[str, Any]) -> ExportOptions:
    """The command's values as typed export options; int8 settings only where the user set them."""
    from ..export import ExportOptions, int8_config

    quantize_ops = None if opts["quantize_ops"] is None else opts["quantize_ops"].split(",")
    fp32_layers = None if opts["fp32_layers"] is None else _layers(opts["fp32_layers"])
    int8 = int8_config(
        opts["int8_recipe"],
        quantize_ops=_given(ctx, "quantize_ops", quantize_ops),
        fp32_layers=_given(ctx, "fp32_layers", fp32_layers),
        smooth=_given(ctx, "smooth_alpha", opts["smooth_alpha"]),
        isa=_given(ctx, "int8_isa", opts["int8_isa"]),
    )
    return ExportOptions(
        model=opts["model"],
        revision=opts["revision"],
        out=opts["out"],
        variants=opts["variants"],
        max_length=opts["max_length"],
        opset=opts["opset"],
        eval_data=opts["eval_data"],
        max_drop=opts["max_drop"],
        force=opts["force"],
        keep=opts["keep"],
        int8=int8,
        external_data=opts["external_data"],
    )


# Config field → this command's parameter name, where they differ.
_PARAMS = {"smooth": "smooth_alpha", "isa": "int8_isa", "recipe": "int8_recipe"}


def _given(ctx: click.Context, param: str, value: Any) -> Any:
    """The value when the user set it (command line or environment); None when it is click's default."""
    source = ctx.get_parameter_source(param)
    return value if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) else None


def _with_sources(ctx: click.Context, exc: ExportOptionError) -> str:
    """The error's message, plus which of its options came from an environment variable."""
    params = {p.name: p for p in ctx.command.params}
    envs = [
        f"{params[name].opts[0]} is set by {params[name].envvar}"
        for name in (_PARAMS.get(field, field) for field in exc.options)
        if name in params and ctx.get_parameter_source(name) == ParameterSource.ENVIRONMENT
    ]
    return str(exc) + (f" ({'; '.join(envs)})" if envs else "")


def _layers(spec: str) -> list[int]:
    """'0,11' → [0, 11]; 'none' or '' → []."""
    if not spec or spec.strip().lower() == "none":
        return []
    try:
        return sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{spec!r}: use layer indices like 0 or 0,11, or 'none'", param_hint="--fp32-layers"
        ) from None
