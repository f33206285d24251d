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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .. import config
from ..console import Steps
from ..engine.model import MANIFEST, MANIFEST_FORMAT, data_entries
from ..errors import ExportError, SentictlError
from .checkpoint import local_checkpoint, resolve_checkpoint, tool_versions
from .outdir import (
    check_existing_out,
    check_out_location,
    default_out,
    install,
    resolve_out,
)
from .parity import (
    PARITY_FILE,
    PARITY_LIMIT,
    check_parity,
    evaluate_variants,
    mark_unusable,
    parity_sentences,
)
from . import stack
from .external import ALIGN, externalize
from .variants import ALL_VARIANTS, build_variant, cpu_isa, parse_variants

# CoreML's static graph stays one file: ORT's CoreML provider compiles the model itself, and that
# path has not been run with external data here (no Apple machine).
EXTERNAL_VARIANTS = ("fp32", "int8", "fp16")

# The names these helpers had before export became a package; tests still call them so.
_install = install
_check_out_location = check_out_location

__all__ = [
    "ALL_VARIANTS",
    "PARITY_FILE",
    "PARITY_LIMIT",
    "check_existing_out",
    "check_out_location",
    "cpu_isa",
    "default_out",
    "install",
    "local_checkpoint",
    "mark_unusable",
    "parity_sentences",
    "parse_variants",
    "resolve_checkpoint",
    "resolve_out",
    "run_export",
]


def run_export(
    model: str = config.DEFAULT_HUB_MODEL,
    revision: str | None = None,
    out: str | Path | None = None,
    variants: str = "auto",
    max_length: int | None = None,
    opset: int | None = None,
    eval_data: str | Path | None = None,
    max_drop: float = 1.0,
    force: bool = False,
    per_channel: bool = True,
    quantize_ops: Sequence[str] | None = None,
    keep: str | None = None,
    fp32_layers: Sequence[int] | None = None,
    quiet: bool = False,
    int8_recipe: str | None = None,
    smooth_alpha: float | None = None,
    int8_isa: str | None = None,
    external_data: bool = True,
) -> dict[str, Any]:
    """Export a checkpoint to a model directory; returns the manifest written.

    int8 options (see variants.py): ``int8_recipe`` rowwise (default) or tensor; ``quantize_ops`` and
    ``fp32_layers`` None take the recipe's defaults; ``smooth_alpha`` SmoothQuant strength for rowwise (None: off);
    ``int8_isa`` the CPU the int8 graph is built for (None: this one; avx2 runs correctly everywhere).
    ``external_data``: each fp32/int8/fp16 variant's weights in a page-aligned ``<file>.data`` beside it
    (see external.py), which ONNX Runtime maps instead of copying.
    """
    int8 = {"per_channel": per_channel, "quantize_ops": quantize_ops, "fp32_layers": fp32_layers,
            "int8_recipe": int8_recipe, "smooth_alpha": smooth_alpha, "int8_isa": int8_isa}
    int8 = {k: v for k, v in int8.items() if v is not None}
    # Before anything else (the hub above all): a plain install must hear "install the export extra".
    stack.require()
    wanted = parse_variants(variants)
    kept = _parse_keep(keep, wanted)
    # Every check on the output folder comes before anything heavy is loaded or anything written.
    local = local_checkpoint(model)
    if local is not None:
        resolve_checkpoint(model, revision)  # cheap for a folder: is it a checkpoint at all?
    out = resolve_out(model, out)
    check_out_location(out, local)
    check_existing_out(out, force)
    steps = Steps("export", 3 + len(wanted) + (1 if eval_data else 0), quiet)
    with stack.quiet_third_party():
        return _export(model, revision, out, local, wanted, kept, max_length, opset, eval_data, max_drop,
                       int8, steps, external_data, force)


def _export(
    model: str,
    revision: str | None,
    out: Path,
    local: Path | None,
    wanted: list[str],
    kept: list[str],
    max_length: int | None,
    opset: int | None,
    eval_data: str | Path | None,
    max_drop: float,
    int8: dict[str, Any],
    steps: Steps,
    external_data: bool,
    force: bool,
) -> dict[str, Any]:
    """The steps of run_export once every argument is checked: checkpoint, build, install."""
    steps.start(f"loading checkpoint {model}")
    checkpoint, source = resolve_checkpoint(model, revision)
    if local is None:  # a hub snapshot: the output must not be inside the cache folder either
        check_out_location(out, checkpoint.resolve())
    try:
        import torch  # noqa: F401  (fail early with a clear message)
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as exc:  # found by stack.require() but broken (a dependency of its own missing)
        raise ExportError(stack.missing_message(exc.name or "torch or transformers")) from None
    hf_config = AutoConfig.from_pretrained(checkpoint)
    id2label = {int(k): str(v) for k, v in (hf_config.id2label or {}).items()}
    if not id2label or len(id2label) != getattr(hf_config, "num_labels", len(id2label)):
        raise ExportError(f"{model} has no id2label map: is it a sequence-classification checkpoint?")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model} has no fast tokenizer (tokenizer.json) and none can be built from it")
    limit = int(getattr(hf_config, "max_position_embeddings", 512) or 512)
    model_max = getattr(tokenizer, "model_max_length", limit) or limit
    length = min(int(max_length or limit), limit, int(model_max) if model_max < 10**8 else limit)
    steps.done(f"{len(id2label)} labels, max length {length}")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _build(
            work, checkpoint, source, hf_config, tokenizer, id2label, length, wanted, opset,
            eval_data, max_drop, int8, steps, out.name, external_data,
        )
        _drop_unkept(work, manifest, kept)
        work.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        install(work, out, force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _build(
    work: Path,
    checkpoint: Path,
    source: dict[str, Any],
    hf_config: Any,
    tokenizer: Any,
    id2label: dict[int, str],
    length: int,
    wanted: list[str],
    opset: int | None,
    eval_data: str | Path | None,
    max_drop: float,
    int8: dict[str, Any],
    steps: Steps,
    name: str,
    external_data: bool = True,
) -> dict[str, Any]:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ExportError(stack.missing_message(exc.name or "optimum-onnx")) from None

    from ..engine.integrity import hash_and_stamp

    raw = work / "_onnx"
    steps.start("exporting to ONNX with optimum (dynamic batch and sequence axes)")
    try:
        main_export(
            str(checkpoint), raw, task="text-classification", opset=opset, do_validation=False,
            local_files_only=True,
        )
    except Exception as exc:
        raise ExportError(f"optimum could not export {source['id']} to ONNX: {exc}") from None
    # optimum and transformers truncate at model_max_length: the export's length, as `score` does.
    tokenizer.model_max_length = length
    tokenizer.save_pretrained(raw)
    shutil.copy(raw / "tokenizer.json", work / "tokenizer.json")
    optimum_files = _keep_optimum_files(raw, work)
    steps.done()

    variants: dict[str, dict[str, Any]] = {}
    for variant in wanted:
        steps.start(f"building the {variant} variant")
        entry = build_variant(variant, raw, work, checkpoint=checkpoint, length=length, opset=opset, **int8)
        data = externalize(work / entry["file"]) if external_data and variant in EXTERNAL_VARIANTS else None
        # Stamped as verified (in the user cache dir, keyed by inode: the rename of `work` keeps
        # it valid), so the first score after an export need not hash the file again.
        entry["sha256"] = hash_and_stamp(work / entry["file"])
        entry["bytes"] = (work / entry["file"]).stat().st_size
        if data is not None:
            entry["data"] = {"file": data.name, "sha256": hash_and_stamp(data), "bytes": data.stat().st_size,
                             "alignment": ALIGN}
        entry["usable"] = True
        variants[variant] = entry
        total = entry["bytes"] + (entry["data"]["bytes"] if data is not None else 0)
        steps.done(f"{entry['file']}" + (f" + {data.name}" if data is not None else "") + f", {total / 1e6:.1f} MB")
    shutil.rmtree(raw, ignore_errors=True)

    tok_entry = {
        "file": "tokenizer.json",
        "sha256": hash_and_stamp(work / "tokenizer.json"),
        "cls_token": tokenizer.cls_token or "[CLS]",
        "sep_token": tokenizer.sep_token or "[SEP]",
        "pad_id": int(tokenizer.pad_token_id or 0),
        "lowercase": bool(getattr(tokenizer, "do_lower_case", False)),
    }
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "source": source,
        "task": "text-classification",
        "architecture": (getattr(hf_config, "architectures", None) or [None])[0],
        "labels": {str(k): v for k, v in sorted(id2label.items())},
        "max_length": length,
        "tokenizer": tok_entry,
        "variants": variants,
        "optimum_files": optimum_files,
        "tools": tool_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
    }
    _write_manifest(work, manifest)

    steps.start(f"parity check on {len(parity_sentences())} built-in sentences")
    manifest["parity"] = check_parity(work, checkpoint, tokenizer, length, variants)
    _write_manifest(work, manifest)
    worst = manifest["parity"]["fp32_vs_pytorch_max_abs_diff"]
    if worst > PARITY_LIMIT:
        raise ExportError(
            f"fp32 ONNX disagrees with PyTorch by {worst:.2e} in probability (limit {PARITY_LIMIT:.0e}): "
            f"the export is wrong; try another --opset"
        )
    steps.done(f"fp32 vs PyTorch max |Δprob| {worst:.1e}; " + ", ".join(
        f"{v}: {variants[v]['parity'].get('label_agreement', 1.0):.0%} agree" for v in variants if v != "fp32"
    ))

    if eval_data:
        steps.start(f"evaluating every variant on {eval_data}")
        labels = [id2label[i] for i in range(len(id2label))]
        from ..evaluate import read_labelled

        texts, gold = read_labelled(eval_data, labels)
        manifest["eval"] = evaluate_variants(work, texts, gold, variants, max_drop, labels)
        manifest["eval"]["data"] = str(eval_data)
        steps.done(", ".join(f"{v}: {variants[v]['eval']['accuracy']:.3f}" for v in variants if "accuracy" in variants[v].get("eval", {})))
    _write_manifest(work, manifest)
    return manifest


# What optimum's ORTModelForSequenceClassification.from_pretrained(dir, file_name=...) and
# transformers' AutoTokenizer read besides the .onnx and tokenizer.json; sentictl itself reads none.
OPTIMUM_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "vocab.txt", "vocab.json", "merges.txt")
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


def _parse_keep(keep: str | None, wanted: list[str]) -> list[str]:
    """Which variants' files stay in the directory (default: every one built)."""
    if not keep:
        return list(wanted)
    kept = [v.strip() for v in keep.split(",") if v.strip()]
    missing = [v for v in kept if v not in wanted]
    if missing or not kept:
        raise SentictlError(f"--keep {keep}: only built variants can be kept ({', '.join(wanted)})")
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
