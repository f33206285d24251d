"""What an export is asked for, as typed configuration validated once, before anything heavy loads.

One dataclass per int8 recipe (as optimum's ``QuantizationConfig`` presets): a recipe holds only
the settings it uses, so an option that does not apply to it (``--smooth`` with
``--int8-recipe tensor``) is refused instead of silently dropped. ``ExportOptions`` gathers the
rest of `sentictl export`'s options. Standard library only: the CLI builds these before the export
stack (torch, optimum) is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .. import config
from ..errors import SentictlError
from ..variantlist import parse_variant_list

ALL_VARIANTS = ("fp32", "int8", "fp16", "coreml")
INT8_RECIPES = ("rowwise", "tensor")
DEFAULT_INT8_RECIPE = "rowwise"
INT8_ISAS = ("auto", "avx2", "avx512", "avx512_vnni", "arm64")
# SmoothQuant strength of the rowwise recipe: 0.5 lifted held-out agreement with fp32 on the
# fine-tuned MiniLM from 99.48 % to 99.69 % (benchmarks/NOTES.md, issue 13); 0 turns it off.
DEFAULT_SMOOTH_ALPHA = 0.5
# QuantizeLinear with one scale per row (axis=0) needs opset 13.
ROWWISE_MIN_OPSET = 13

# Config field → the `sentictl export` option that sets it (messages name the option a user typed).
OPTION_NAMES = {
    "quantize_ops": "--quantize-ops",
    "fp32_layers": "--fp32-layers",
    "smooth": "--smooth",
    "isa": "--int8-isa",
    "recipe": "--int8-recipe",
    "opset": "--opset",
}


class ExportOptionError(SentictlError):
    """Export options that are invalid or do not go together (the CLI answers with exit status 2)."""

    def __init__(self, message: str, options: Sequence[str] = ()):
        super().__init__(message)
        self.options = tuple(options)  # the config fields at fault, e.g. ("smooth", "recipe")


def _ops(value: Sequence[str], allowed: Sequence[str] | None) -> tuple[str, ...]:
    ops = tuple(dict.fromkeys(str(op).strip() for op in value if str(op).strip()))
    if not ops:
        raise ExportOptionError("--quantize-ops names no operator (e.g. MatMul or MatMul,Gather)", ["quantize_ops"])
    unknown = [op for op in ops if allowed is not None and op not in allowed]
    if unknown:
        raise ExportOptionError(
            f"the rowwise int8 recipe quantizes MatMul and Gather, not {', '.join(unknown)}: "
            f"use --int8-recipe tensor for other operators",
            ["quantize_ops", "recipe"],
        )
    return ops


def _layers(value: Sequence[int]) -> tuple[int, ...]:
    try:
        layers = tuple(sorted({int(layer) for layer in value}))
    except (TypeError, ValueError):
        raise ExportOptionError(f"--fp32-layers {value!r}: use layer indices like 0 or 0,11", ["fp32_layers"]) from None
    if any(layer < 0 for layer in layers):
        raise ExportOptionError(f"--fp32-layers {list(value)}: layer indices start at 0", ["fp32_layers"])
    return layers


def _isa(value: str) -> str:
    if value not in INT8_ISAS:
        raise ExportOptionError(f"unknown int8 target {value!r}: choose from {', '.join(INT8_ISAS)}", ["isa"])
    return value


@dataclass(frozen=True)
class RowwiseInt8:
    """Row-wise dynamic int8 (the default): one activation scale per token, so results never depend on the batch."""

    recipe: ClassVar[str] = "rowwise"
    quantize_ops: tuple[str, ...] = ("MatMul", "Gather")
    fp32_layers: tuple[int, ...] = ()
    smooth: float = DEFAULT_SMOOTH_ALPHA  # SmoothQuant strength; 0 turns it off
    isa: str = "auto"  # the CPU the graph is built for (auto: this one)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantize_ops", _ops(self.quantize_ops, ("MatMul", "Gather")))
        object.__setattr__(self, "fp32_layers", _layers(self.fp32_layers))
        object.__setattr__(self, "isa", _isa(self.isa))
        if not 0 <= float(self.smooth) <= 1:
            raise ExportOptionError(f"--smooth {self.smooth}: the SmoothQuant strength is between 0 and 1", ["smooth"])
        object.__setattr__(self, "smooth", float(self.smooth))

    def to_manifest(self) -> dict[str, Any]:
        return _as_manifest(self)


@dataclass(frozen=True)
class TensorInt8:
    """The per-tensor recipe before issue 13 (optimum/ORT dynamic quantization): results move with the batch."""

    recipe: ClassVar[str] = "tensor"
    quantize_ops: tuple[str, ...] = ("MatMul",)
    fp32_layers: tuple[int, ...] = (0,)
    isa: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantize_ops", _ops(self.quantize_ops, None))
        object.__setattr__(self, "fp32_layers", _layers(self.fp32_layers))
        object.__setattr__(self, "isa", _isa(self.isa))

    def to_manifest(self) -> dict[str, Any]:
        return _as_manifest(self)


Int8Config = RowwiseInt8 | TensorInt8
INT8_CONFIGS: dict[str, type[RowwiseInt8 | TensorInt8]] = {"rowwise": RowwiseInt8, "tensor": TensorInt8}


def _as_manifest(cfg: Int8Config) -> dict[str, Any]:
    """The config as the manifest records it: the recipe and every setting (tuples as lists)."""
    out: dict[str, Any] = {"recipe": cfg.recipe}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def int8_config(recipe: str | None = None, **given: Any) -> Int8Config:
    """The recipe's config from the settings given (None: not given, the recipe's default).

    A setting the recipe does not have is an ExportOptionError that names both options.
    """
    recipe = recipe or DEFAULT_INT8_RECIPE
    if recipe not in INT8_CONFIGS:
        raise ExportOptionError(f"unknown int8 recipe {recipe!r}: choose from {', '.join(INT8_RECIPES)}", ["recipe"])
    cls = INT8_CONFIGS[recipe]
    settings = {k: v for k, v in given.items() if v is not None}
    names = {f.name for f in fields(cls)}
    for key in settings:
        if key not in names:
            option = OPTION_NAMES.get(key, key)
            users = [r for r, c in INT8_CONFIGS.items() if key in {f.name for f in fields(c)}]
            hint = f"it applies to --int8-recipe {' or '.join(users)}" if users else "no recipe has it"
            raise ExportOptionError(
                f"{option} does not apply to --int8-recipe {recipe} ({hint}): drop {option} or change --int8-recipe",
                [key, "recipe"],
            )
    return cls(**settings)


def parse_variants(spec: str | None) -> list[str]:
    """'auto', 'all' or a comma list → the variants to build, fp32 first (always built: it is the reference)."""
    chosen = parse_variant_list(
        spec or "auto", ALL_VARIANTS, keywords={"auto": ("fp32", "int8")}, what="sentictl export builds no variant"
    )
    return ["fp32"] + [v for v in ALL_VARIANTS if v in chosen and v != "fp32"]


@dataclass(frozen=True)
class ExportOptions:
    """Everything `sentictl export` is asked for; validated on construction, before anything is loaded."""

    model: str = config.DEFAULT_HUB_MODEL
    revision: str | None = None
    out: str | Path | None = None
    variants: str = "auto"
    max_length: int | None = None
    opset: int | None = None
    eval_data: str | Path | None = None
    max_drop: float = 1.0
    force: bool = False
    keep: str | None = None
    int8: Int8Config = field(default_factory=RowwiseInt8)
    external_data: bool = True  # each fp32/int8/fp16 variant's weights in a page-aligned <file>.data
    quiet: bool = False
    wanted: tuple[str, ...] = field(init=False)  # the variants to build, fp32 first
    kept: tuple[str, ...] = field(init=False)  # the variants whose files stay in the folder

    def __post_init__(self) -> None:
        if not isinstance(self.int8, (RowwiseInt8, TensorInt8)):
            raise ExportOptionError(f"int8 must be RowwiseInt8 or TensorInt8, not {type(self.int8).__name__}")
        wanted = tuple(parse_variants(self.variants))
        kept = (
            parse_variant_list(self.keep, wanted, what="--keep: this export builds no variant") if self.keep else wanted
        )
        object.__setattr__(self, "wanted", wanted)
        object.__setattr__(self, "kept", tuple(kept))
        if (
            isinstance(self.int8, RowwiseInt8)
            and "int8" in wanted
            and self.opset is not None
            and self.opset < ROWWISE_MIN_OPSET
        ):
            raise ExportOptionError(
                f"--int8-recipe rowwise needs --opset {ROWWISE_MIN_OPSET} or later (per-row QuantizeLinear), "
                f"not --opset {self.opset}: raise --opset or use --int8-recipe tensor",
                ["recipe", "opset"],
            )
