"""Checkpoint (hub id or local dir) → ONNX → optimize → quantize / fp16 / CoreML → parity → model dir.

The only package that needs torch, transformers and optimum; it imports them inside functions so
that ``import sentictl.export`` stays cheap and the score/serve/bridge path never pays for them.

``outdir`` guards where an export writes, ``checkpoint`` finds the checkpoint, ``variants``
builds the ONNX files and ``parity`` measures them; this module runs the steps in order.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import config
from ..console import Steps
from ..engine.cpu import cpu_isa
from ..engine.model import MANIFEST, MANIFEST_FORMAT, data_entries
from ..errors import ExportError
from . import stack
from .checkpoint import local_checkpoint, resolve_checkpoint, tool_versions
from .external import ALIGN, externalize
from .options import (
    ALL_VARIANTS,
    ExportOptionError,
    ExportOptions,
    Int8Config,
    RowwiseInt8,
    TensorInt8,
    int8_config,
    parse_variants,
)
from .outdir import check_existing_out, check_out_location, default_out, install, resolve_out
from .parity import PARITY_FILE, PARITY_LIMIT, check_parity, evaluate_variants, mark_unusable, parity_sentences
from .variants import build_variant

# CoreML's static graph stays one file: ORT's CoreML provider compiles the model itself, and that
# path has not been run with external data here (no Apple machine).
EXTERNAL_VARIANTS = ("fp32", "int8", "fp16")

__all__ = [
    "ALL_VARIANTS",
    "PARITY_FILE",
    "PARITY_LIMIT",
    "ExportOptionError",
    "ExportOptions",
    "Int8Config",
    "RowwiseInt8",
    "TensorInt8",
    "check_existing_out",
    "check_out_location",
    "cpu_isa",
    "default_out",
    "install",
    "int8_config",
    "local_checkpoint",
    "mark_unusable",
    "parity_sentences",
    "parse_variants",
    "resolve_checkpoint",
    "resolve_out",
    "run_export",
]


def run_export(model: str | ExportOptions = config.DEFAULT_HUB_MODEL, **options: Any) -> dict[str, Any]:
    """Export a checkpoint to a model directory; returns the manifest written.

    ``run_export(ExportOptions(...))``, or ``run_export("ckpt", out=..., variants="all", int8=RowwiseInt8(smooth=0.3))``
    with ExportOptions' fields as keywords (an unknown keyword is a TypeError, never ignored).
    """
    opts = model if isinstance(model, ExportOptions) else ExportOptions(model=model, **options)
    if isinstance(model, ExportOptions) and options:
        raise TypeError("run_export(ExportOptions(...)) takes no other arguments")
    # Before anything else (the hub above all): a plain install must hear "install the export extra".
    stack.require()
    # Every check on the output folder comes before anything heavy is loaded or anything written.
    local = local_checkpoint(opts.model)
    if local is not None:
        resolve_checkpoint(opts.model, opts.revision)  # cheap for a folder: is it a checkpoint at all?
    out = resolve_out(opts.model, opts.out)
    check_out_location(out, local)
    check_existing_out(out, opts.force)
    steps = Steps("export", 3 + len(opts.wanted) + (1 if opts.eval_data else 0), opts.quiet)
    with stack.quiet_third_party():
        return _export(opts, out, local, steps)


def _export(opts: ExportOptions, out: Path, local: Path | None, steps: Steps) -> dict[str, Any]:
    """The steps of run_export once every argument is checked: checkpoint, build, install."""
    steps.start(f"loading checkpoint {opts.model}")
    checkpoint, source = resolve_checkpoint(opts.model, opts.revision)
    if local is None:  # a hub snapshot: the output must not be inside the cache folder either
        check_out_location(out, checkpoint.resolve())
    hf_config, tokenizer, id2label, length = _load_checkpoint(opts, checkpoint)
    steps.done(f"{len(id2label)} labels, max length {length}")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        source_model = _Source(checkpoint, source, hf_config, tokenizer, id2label, length)
        manifest = _build(work, source_model, opts, steps, out.name)
        _drop_unkept(work, manifest, list(opts.kept))
        work.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        install(work, out, opts.force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _load_checkpoint(opts: ExportOptions, checkpoint: Path) -> tuple[Any, Any, dict[int, str], int]:
    """The checkpoint's config, fast tokenizer, label map and the export's max length."""
    try:
        import torch  # noqa: F401  (fail early with a clear message)
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as exc:  # found by stack.require() but broken (a dependency of its own missing)
        raise ExportError(stack.missing_message(exc.name or "torch or transformers")) from None
    hf_config = AutoConfig.from_pretrained(checkpoint)
    id2label = {int(k): str(v) for k, v in (hf_config.id2label or {}).items()}
    if not id2label or len(id2label) != getattr(hf_config, "num_labels", len(id2label)):
        raise ExportError(f"{opts.model} has no id2label map: is it a sequence-classification checkpoint?")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)  # type: ignore[no-untyped-call]
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{opts.model} has no fast tokenizer (tokenizer.json) and none can be built from it")
    limit = int(getattr(hf_config, "max_position_embeddings", 512) or 512)
    model_max = getattr(tokenizer, "model_max_length", limit) or limit
    length = min(int(opts.max_length or limit), limit, int(model_max) if model_max < 10**8 else limit)
    return hf_config, tokenizer, id2label, length


@dataclass(frozen=True)
class _Source:
    """The loaded checkpoint an export is built from."""

    path: Path
    info: dict[str, Any]  # the manifest's "source": id and revision
    hf_config: Any
    tokenizer: Any
    id2label: dict[int, str]
    length: int


def _build(work: Path, src: _Source, opts: ExportOptions, steps: Steps, name: str) -> dict[str, Any]:
    """optimum's export, every variant, the manifest, parity and (with eval data) accuracy, in ``work``."""
    raw = work / "_onnx"
    steps.start("exporting to ONNX with optimum (dynamic batch and sequence axes)")
    optimum_files = _optimum_export(raw, work, src, opts.opset)
    steps.done()
    variants: dict[str, dict[str, Any]] = {}
    for variant in opts.wanted:
        steps.start(f"building the {variant} variant")
        variants[variant] = entry = _build_one(variant, raw, work, src, opts)
        total = entry["bytes"] + (entry["data"]["bytes"] if "data" in entry else 0)
        steps.done(
            entry["file"] + (f" + {entry['data']['file']}" if "data" in entry else "") + f", {total / 1e6:.1f} MB"
        )
    shutil.rmtree(raw, ignore_errors=True)
    manifest = _manifest(src, variants, optimum_files, name, opts.opset, work)
    _write_manifest(work, manifest)

    steps.start(f"parity check on {len(parity_sentences())} built-in sentences")
    manifest["parity"] = check_parity(work, src.path, src.tokenizer, src.length, variants)
    _write_manifest(work, manifest)
    worst = manifest["parity"]["fp32_vs_pytorch_max_abs_diff"]
    if worst > PARITY_LIMIT:
        raise ExportError(
            f"fp32 ONNX disagrees with PyTorch by {worst:.2e} in probability (limit {PARITY_LIMIT:.0e}): "
            f"the export is wrong; try another --opset"
        )
    steps.done(
        f"fp32 vs PyTorch max |Δprob| {worst:.1e}; "
        + ", ".join(
            f"{v}: {variants[v]['parity'].get('label_agreement', 1.0):.0%} agree" for v in variants if v != "fp32"
        )
    )
    if opts.eval_data:
        steps.start(f"evaluating every variant on {opts.eval_data}")
        _evaluate(work, manifest, src, opts)
        steps.done(
            ", ".join(
                f"{v}: {variants[v]['eval']['accuracy']:.3f}"
                for v in variants
                if "accuracy" in variants[v].get("eval", {})
            )
        )
    _write_manifest(work, manifest)
    return manifest


def _optimum_export(raw: Path, work: Path, src: _Source, opset: int | None) -> list[dict[str, Any]]:
    """optimum's plain ONNX export into ``raw``, tokenizer.json into ``work``; the optimum files kept."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ExportError(stack.missing_message(exc.name or "optimum-onnx")) from None
    try:
        main_export(
            str(src.path), raw, task="text-classification", opset=opset, do_validation=False, local_files_only=True
        )
    except Exception as exc:
        raise ExportError(f"optimum could not export {src.info['id']} to ONNX: {exc}") from None
    # optimum and transformers truncate at model_max_length: the export's length, as `score` does.
    src.tokenizer.model_max_length = src.length
    src.tokenizer.save_pretrained(raw)
    shutil.copy(raw / "tokenizer.json", work / "tokenizer.json")
    return _keep_optimum_files(raw, work)


def _build_one(variant: str, raw: Path, work: Path, src: _Source, opts: ExportOptions) -> dict[str, Any]:
    """One variant's files (graph, and its weights file unless single-file) and its manifest entry."""
    from ..engine.integrity import hash_and_stamp

    entry = build_variant(variant, raw, work, int8=opts.int8, checkpoint=src.path, length=src.length, opset=opts.opset)
    data = externalize(work / entry["file"]) if opts.external_data and variant in EXTERNAL_VARIANTS else None
    # Stamped as verified (in the user cache dir, keyed by inode: the rename of `work` keeps
    # it valid), so the first score after an export need not hash the file again.
    entry["sha256"] = hash_and_stamp(work / entry["file"])
    entry["bytes"] = (work / entry["file"]).stat().st_size
    if data is not None:
        entry["data"] = {
            "file": data.name,
            "sha256": hash_and_stamp(data),
            "bytes": data.stat().st_size,
            "alignment": ALIGN,
        }
    entry["usable"] = True
    return entry


def _manifest(
    src: _Source,
    variants: dict[str, dict[str, Any]],
    optimum_files: list[dict[str, Any]],
    name: str,
    opset: int | None,
    work: Path,
) -> dict[str, Any]:
    """The manifest before parity: source, labels, tokenizer, variants, tools."""
    from ..engine.integrity import hash_and_stamp

    tokenizer = src.tokenizer
    tok_entry = {
        "file": "tokenizer.json",
        "sha256": hash_and_stamp(work / "tokenizer.json"),
        "cls_token": tokenizer.cls_token or "[CLS]",
        "sep_token": tokenizer.sep_token or "[SEP]",
        "pad_id": int(tokenizer.pad_token_id or 0),
        "lowercase": bool(getattr(tokenizer, "do_lower_case", False)),
    }
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "source": src.info,
        "task": "text-classification",
        "architecture": (getattr(src.hf_config, "architectures", None) or [None])[0],
        "labels": {str(k): v for k, v in sorted(src.id2label.items())},
        "max_length": src.length,
        "tokenizer": tok_entry,
        "variants": variants,
        "optimum_files": optimum_files,
        "tools": tool_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
    }


def _evaluate(work: Path, manifest: dict[str, Any], src: _Source, opts: ExportOptions) -> None:
    """Each variant's accuracy on the labelled eval data, into the manifest."""
    from ..evaluate import read_labelled

    assert opts.eval_data is not None
    labels = [src.id2label[i] for i in range(len(src.id2label))]
    texts, gold = read_labelled(opts.eval_data, labels)
    manifest["eval"] = evaluate_variants(work, texts, gold, manifest["variants"], opts.max_drop, labels)
    manifest["eval"]["data"] = str(opts.eval_data)


# What optimum's ORTModelForSequenceClassification.from_pretrained(dir, file_name=...) and
# transformers' AutoTokenizer read besides the .onnx and tokenizer.json; sentictl itself reads none.
OPTIMUM_FILES = (
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_VOCAB_LIMIT = 4 << 20  # a vocabulary file is a convenience (tokenizer.json suffices): only when small


def _keep_optimum_files(raw: Path, work: Path) -> list[dict[str, Any]]:
    """Copy optimum's config and tokenizer files into the model directory; their manifest entries."""
    from ..engine.integrity import hash_and_stamp

    kept = []
    for name in OPTIMUM_FILES:
        source = raw / name
        if not source.is_file() or (name.startswith(("vocab", "merges")) and source.stat().st_size > _VOCAB_LIMIT):
            continue
        shutil.copy(source, work / name)
        kept.append({"file": name, "sha256": hash_and_stamp(work / name)})
    if not any(entry["file"] == "config.json" for entry in kept):
        raise ExportError("optimum wrote no config.json: the model directory could not be loaded by optimum")
    return kept


def _drop_unkept(work: Path, manifest: dict[str, Any], kept: list[str]) -> None:
    """Delete the files of variants not kept; their figures stay in the manifest for reference."""
    for name, entry in manifest["variants"].items():
        if name not in kept:
            for item in (entry, *data_entries(entry)):
                (work / item["file"]).unlink(missing_ok=True)
            entry["shipped"] = False
    _write_manifest(work, manifest)


def _write_manifest(work: Path, manifest: dict[str, Any]) -> None:
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
