"""Checkpoint (hub id or local dir) → ONNX → optimize → quantize / fp16 / CoreML → parity → model dir.

The only module that needs torch, transformers and optimum; it imports them inside functions so
that ``import sentictl.export`` stays cheap and the score/serve/bridge path never pays for them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import config
from .errors import ExportError, SentictlError
from .model import MANIFEST, MANIFEST_FORMAT, Model, sha256_file

ALL_VARIANTS = ("fp32", "int8", "fp16", "coreml")
PARITY_LIMIT = 1e-4
PARITY_FILE = Path(__file__).resolve().parent / "data" / "parity.txt"
_HUB_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "*.safetensors",
    "pytorch_model.bin",
]


class _Progress:
    """Numbered step lines on stderr, each with its duration."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.n, self.quiet = total, 0, quiet
        self.started = 0.0

    def start(self, what: str) -> None:
        self.n += 1
        self.started = time.perf_counter()
        if not self.quiet:
            print(f"sentictl export [{self.n}/{self.total}] {what} ...", file=sys.stderr, flush=True)

    def done(self, detail: str = "") -> None:
        if not self.quiet:
            took = time.perf_counter() - self.started
            print(f"    done in {took:.1f} s{'; ' + detail if detail else ''}", file=sys.stderr, flush=True)


def parse_variants(spec: str) -> list[str]:
    """'auto' or a comma list → the variants to build (fp32 is always built: it is the reference)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        wanted = ["fp32", "int8"]
    elif spec == "all":
        wanted = list(ALL_VARIANTS)
    else:
        wanted = [v.strip() for v in spec.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in ALL_VARIANTS]
        if unknown:
            raise SentictlError(f"unknown variant(s) {', '.join(unknown)}: choose from auto, all, {', '.join(ALL_VARIANTS)}")
    return ["fp32"] + [v for v in ALL_VARIANTS if v in wanted and v != "fp32"]


def cpu_isa() -> str:
    """The int8 instruction-set target for this CPU: avx512_vnni, avx512, avx2 or arm64."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    words = set(flags.split())
    if "avx512_vnni" in words or "avx_vnni" in words:
        return "avx512_vnni"
    if "avx512f" in words:
        return "avx512"
    return "avx2"


def default_out(model: str) -> Path:
    """models/<checkpoint name, lower-cased>: ProsusAI/finbert → models/finbert.

    A local checkpoint is named after its resolved folder (``--model ..`` names the parent
    folder, never ``models/..``); a name that is empty, ``.`` or ``..`` becomes ``model``.
    """
    local = _local_checkpoint(model)
    name = local.name if local is not None else Path(model.strip().rstrip("/\\")).name
    name = name.strip().lower()
    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        name = "model"
    return config.DEFAULT_MODELS_ROOT / name


def resolve_out(model: str, out: str | Path | None) -> Path:
    """The absolute model directory an export writes: --out, or default_out(model), resolved."""
    chosen = Path(out) if out not in (None, "") else default_out(model)
    return chosen.expanduser().resolve()


def _local_checkpoint(model: str) -> Path | None:
    """The resolved directory of a local checkpoint, or None when ``model`` is not a directory (a hub id)."""
    local = Path(model).expanduser()
    return local.resolve() if local.is_dir() else None


def _is_within(path: Path, other: Path) -> bool:
    """True when ``path`` is ``other`` or lies below it (both absolute and resolved)."""
    return path == other or other in path.parents


def _check_out_location(out: Path, checkpoint: Path | None) -> None:
    """Refuse an output folder whose replacement could destroy something the export did not create.

    ``out`` must be absolute and resolved. Refused: the current directory, the home directory, a
    file-system root, the checkpoint directory, or any folder that contains one of them; and any
    folder inside the checkpoint. Folders below the current directory (models/finbert) are fine.
    """
    hint = "choose an --out folder of its own, e.g. models/NAME"

    def refuse(why: str) -> None:
        raise ExportError(f"refusing to export to {out}: {why}; {hint}")

    if out == Path(out.anchor):
        refuse("it is a file-system root")
    guarded: list[tuple[Path, str]] = [(Path.cwd().resolve(), "the current directory")]
    try:
        guarded.append((Path.home().resolve(), "your home directory"))
    except (RuntimeError, KeyError, OSError):  # no HOME and no password entry: nothing to guard
        pass
    if checkpoint is not None:
        guarded.append((checkpoint, "the checkpoint directory"))
    for place, what in guarded:
        if out == place:
            refuse(f"it is {what}")
    for place, what in guarded:
        if _is_within(place, out):
            refuse(f"it contains {what} ({place})")
    if checkpoint is not None and _is_within(out, checkpoint):
        refuse(f"it lies inside the checkpoint directory {checkpoint}")


def _sentictl_model_problem(folder: Path) -> str | None:
    """None when ``folder`` holds a model directory written by sentictl export, else why not."""
    manifest_path = folder / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return f"it has no {MANIFEST}"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its {MANIFEST} is not readable JSON ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST} is not a sentictl manifest"
    expected = {"format": int, "labels": dict, "variants": dict, "tokenizer": dict}
    wrong = [key for key, kind in expected.items() if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool)]
    if wrong:
        return f"its {MANIFEST} is not a sentictl manifest (no valid {', '.join(wrong)})"
    return None


def _check_existing_out(out: Path, force: bool) -> None:
    """An existing --out: missing or empty is fine; otherwise only a sentictl model folder, with --force."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory: choose another --out")
    if not any(out.iterdir()):
        return  # an empty folder holds nothing to lose
    problem = _sentictl_model_problem(out)
    if not force:
        if problem is None:
            raise ExportError(f"{out} already holds an exported model: pass --force to replace it, or --out elsewhere")
        raise ExportError(
            f"{out} exists, is not empty and is not a sentictl model folder ({problem}): choose another --out"
        )
    if problem is not None:
        raise ExportError(
            f"refusing to replace {out} even with --force: it is not empty and not a sentictl model folder "
            f"({problem}); choose another --out or empty it yourself"
        )


def _install(work: Path, out: Path, force: bool) -> None:
    """Move the finished ``work`` folder to ``out``, replacing only an empty folder or a previous sentictl model.

    A previous model is first renamed aside (.NAME.old-XXXX), then the new one is renamed in, then
    the old one is deleted; if the rename in fails, the old one is moved back.
    """
    _check_existing_out(out, force)  # again: the folder may have changed during the build
    if not out.exists() and not out.is_symlink():
        work.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        work.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        work.rename(out)
    except BaseException:
        try:
            old.rename(out)
        except OSError as exc:
            raise ExportError(f"could not put the previous model back at {out} ({exc}): it is in {old}") from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(model: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """A local checkpoint directory for a hub id or path, plus the source record for the manifest."""
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ExportError(f"{local} has no config.json: point --model at a Hugging Face checkpoint directory")
        return local, {"id": str(local.resolve()), "revision": revision, "kind": "local"}
    if model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1):
        raise ExportError(f"{model} is not a directory (and not a hub id like ProsusAI/finbert)")
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id=model, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as exc:  # offline, DNS, 401/404, missing cache entry: all end the same way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"cannot get {model} from the Hugging Face hub ({type(exc).__name__}: {reason[:200]}).\n"
            f"  On a machine without hub access, export from a local checkpoint directory instead:\n"
            f"    sentictl export --model /path/to/finbert   # a folder with config.json, weights and vocab\n"
            f"  or point HF_HOME at a cache that already holds {model} (with HF_HUB_OFFLINE=1)."
        ) from None
    resolved = path.name if len(path.name) == 40 else revision
    return path, {"id": model, "revision": resolved or revision, "kind": "hub"}


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("sentictl", "onnxruntime", "onnxruntime-gpu", "onnx", "optimum", "optimum-onnx", "transformers", "torch", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


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
    quantize_ops: Sequence[str] = ("MatMul",),
    keep: str | None = None,
    fp32_layers: Sequence[int] = (0,),
    quiet: bool = False,
) -> dict[str, Any]:
    """Export a checkpoint to a model directory; returns the manifest written."""
    wanted = parse_variants(variants)
    kept = _parse_keep(keep, wanted)
    # Every check on the output folder comes before anything heavy is loaded or anything written.
    local = _local_checkpoint(model)
    if local is not None:
        resolve_checkpoint(model, revision)  # cheap for a folder: is it a checkpoint at all?
    out = resolve_out(model, out)
    _check_out_location(out, local)
    _check_existing_out(out, force)
    steps = _Progress(3 + len(wanted) + (1 if eval_data else 0), quiet)

    steps.start(f"loading checkpoint {model}")
    checkpoint, source = resolve_checkpoint(model, revision)
    if local is None:  # a hub snapshot: the output must not be inside the cache folder either
        _check_out_location(out, checkpoint.resolve())
    try:
        import torch  # noqa: F401  (fail early with a clear message)
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as exc:
        raise ExportError(
            f"export needs the export extra ({exc.name} is missing): pip install 'sentictl[export]'"
        ) from None
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
            eval_data, max_drop, per_channel, quantize_ops, fp32_layers, steps, out.name,
        )
        _drop_unkept(work, manifest, kept)
        work.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        _install(work, out, force)
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
    per_channel: bool,
    quantize_ops: Sequence[str],
    fp32_layers: Sequence[int],
    steps: _Progress,
    name: str,
) -> dict[str, Any]:
    from optimum.exporters.onnx import main_export

    from .integrity import hash_and_stamp

    raw = work / "_onnx"
    steps.start("exporting to ONNX with optimum (dynamic batch and sequence axes)")
    try:
        main_export(
            str(checkpoint), raw, task="text-classification", opset=opset, do_validation=False,
            local_files_only=True,
        )
    except Exception as exc:
        raise ExportError(f"optimum could not export {source['id']} to ONNX: {exc}") from None
    tokenizer.save_pretrained(raw)
    shutil.copy(raw / "tokenizer.json", work / "tokenizer.json")
    steps.done()

    variants: dict[str, dict[str, Any]] = {}
    for variant in wanted:
        steps.start(f"building the {variant} variant")
        builder = {"fp32": _fp32, "int8": _int8, "fp16": _fp16, "coreml": _coreml}[variant]
        entry = builder(raw, work, checkpoint=checkpoint, length=length, opset=opset, per_channel=per_channel, quantize_ops=quantize_ops, fp32_layers=fp32_layers)
        # Stamped as verified (in the user cache dir, keyed by inode: the rename of `work` keeps
        # it valid), so the first score after an export need not hash the file again.
        entry["sha256"] = hash_and_stamp(work / entry["file"])
        entry["bytes"] = (work / entry["file"]).stat().st_size
        entry["usable"] = True
        variants[variant] = entry
        steps.done(f"{entry['file']}, {entry['bytes'] / 1e6:.1f} MB")
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
        "tools": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
    }
    _write_manifest(work, manifest)

    steps.start(f"parity check on {len(_parity_sentences())} built-in sentences")
    manifest["parity"] = _parity(work, checkpoint, tokenizer, length, variants)
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
        from .evaluate import read_labelled

        texts, gold = read_labelled(eval_data, labels)
        manifest["eval"] = _evaluate(work, texts, gold, variants, max_drop, labels)
        manifest["eval"]["data"] = str(eval_data)
        steps.done(", ".join(f"{v}: {variants[v]['eval']['accuracy']:.3f}" for v in variants if "accuracy" in variants[v].get("eval", {})))
    _write_manifest(work, manifest)
    return manifest


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
            (work / entry["file"]).unlink(missing_ok=True)
            entry["shipped"] = False
    _write_manifest(work, manifest)


def _write_manifest(work: Path, manifest: dict[str, Any]) -> None:
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _optimize(raw: Path, dest: Path, gpu: bool, fp16: bool) -> None:
    import logging

    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    tmp = raw.parent / ("_opt_fp16" if fp16 else "_opt")
    # Optimizing for a GPU on a machine without one is expected here (fp16 is converted on the CPU);
    # ORT logs that as an ERROR, which would only alarm the user.
    logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.CRITICAL)
    optimizer = ORTOptimizer.from_pretrained(raw)
    optimizer.optimize(
        OptimizationConfig(optimization_level=2, optimize_for_gpu=gpu, fp16=fp16), save_dir=tmp,
    )
    shutil.move(str(tmp / "model_optimized.onnx"), dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _fp32(raw: Path, work: Path, **_: Any) -> dict[str, Any]:
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
    import re

    import onnx

    wanted = set(layers)
    pattern = re.compile(r"/layer\.(\d+)/")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        node.name for node in graph.node
        if node.op_type in ("MatMul", "Gather") and (m := pattern.search(node.name)) and int(m.group(1)) in wanted
    ]


def _int8(raw: Path, work: Path, per_channel: bool = True, quantize_ops: Sequence[str] = ("MatMul",),
          fp32_layers: Sequence[int] = (0,), **_: Any) -> dict[str, Any]:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    isa = cpu_isa()
    factory = getattr(AutoQuantizationConfig, isa)
    # The first encoder layer is the most sensitive to int8: keeping it in fp32 lifted label
    # agreement with fp32 from 98.2 % to 98.6 % on held-out tweets for ~8 % of the speed on
    # bert-base (benchmarks/NOTES.md).
    excluded = _layer_nodes(raw / "model.onnx", fp32_layers) if fp32_layers else []
    kwargs: dict[str, Any] = {
        "is_static": False, "per_channel": per_channel, "operators_to_quantize": list(quantize_ops),
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
            "mode": "dynamic",
            "isa": isa,
            "per_channel": per_channel,
            "operators": list(quantize_ops),
            "fp32_layers": list(fp32_layers),
            "fp32_nodes": len(excluded),
            "weights": "int8 symmetric",
            "activations": "uint8 asymmetric, per tensor, computed at run time",
            "reduce_range": kwargs.get("reduce_range", False),
        },
    }


def _fp16(raw: Path, work: Path, **_: Any) -> dict[str, Any]:
    _optimize(raw, work / "model_fp16.onnx", gpu=True, fp16=True)
    return {
        "file": "model_fp16.onnx",
        "precision": "fp16",
        "provider": "cuda",
        "quantization": None,
        "optimization": {"level": 2, "for_gpu": True, "fp16": True, "io_types": "fp32 (kept)"},
    }


def _coreml(raw: Path, work: Path, checkpoint: Path, length: int, opset: int | None, **_: Any) -> dict[str, Any]:
    from optimum.exporters.onnx import main_export

    # CoreML cannot compile dynamic shapes, so the graph is exported with fixed [1, max_length]
    # inputs and left unfused: ORT's fused contrib ops (Attention, SkipLayerNorm) have no CoreML
    # kernels. The 30,522-row word-embedding Gather exceeds CoreML's 16,384 dimension limit and
    # runs on the CPU provider; everything after it can run on CoreML.
    tmp = work / "_coreml"
    main_export(
        str(checkpoint), tmp, task="text-classification", opset=opset, do_validation=False,
        local_files_only=True, no_dynamic_axes=True, batch_size=1, sequence_length=length,
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


def _parity_sentences() -> list[str]:
    return [s for s in PARITY_FILE.read_text().splitlines() if s.strip()]


def _torch_probs(checkpoint: Path, tokenizer: Any, texts: Sequence[str], length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            enc = tokenizer(list(texts[start : start + 16]), padding=True, truncation=True, max_length=length, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


def _load_variant(work: Path, variant: str) -> Model:
    return Model(work, provider="cpu", variant=variant, threads=None)


def _parity(work: Path, checkpoint: Path, tokenizer: Any, length: int, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    texts = _parity_sentences()
    reference = _torch_probs(checkpoint, tokenizer, texts, length)
    fp32, _ = _load_variant(work, "fp32").predict_proba(texts)
    diff = float(np.abs(fp32 - reference).max())
    variants["fp32"]["parity"] = {"vs": "pytorch", "max_abs_diff": diff, "label_agreement": float((fp32.argmax(1) == reference.argmax(1)).mean())}
    for name in variants:
        if name == "fp32":
            continue
        try:
            probs, _ = _load_variant(work, name).predict_proba(texts)
        except SentictlError as exc:
            variants[name]["parity"] = {"vs": "fp32", "error": f"not run on the cpu provider: {exc}"[:300]}
            continue
        variants[name]["parity"] = {
            "vs": "fp32",
            "max_abs_diff": float(np.abs(probs - fp32).max()),
            "label_agreement": float((probs.argmax(1) == fp32.argmax(1)).mean()),
        }
    return {"sentences": len(texts), "fp32_vs_pytorch_max_abs_diff": diff, "limit": PARITY_LIMIT}


def _evaluate(work: Path, texts: list[str], gold: list[int], variants: dict[str, dict[str, Any]], max_drop: float, labels: list[str]) -> dict[str, Any]:
    from .evaluate import metrics

    gold_arr = np.asarray(gold)
    preds: dict[str, np.ndarray] = {}
    for name in variants:
        try:
            probs, _ = _load_variant(work, name).predict_proba(texts)
        except SentictlError as exc:
            variants[name]["eval"] = {"error": f"not run on the cpu provider: {exc}"[:300]}
            continue
        preds[name] = probs.argmax(1)
    accuracy = {name: float((pred == gold_arr).mean()) for name, pred in preds.items()}
    for name, pred in preds.items():
        variants[name]["eval"] = {
            "accuracy": accuracy[name],
            "macro_f1": metrics(gold, pred, labels)["macro_f1"],
            "drop_points": round((accuracy["fp32"] - accuracy[name]) * 100, 3),
            "label_agreement_vs_fp32": float((pred == preds["fp32"]).mean()),
        }
    mark_unusable(variants, accuracy, max_drop)
    return {"texts": len(texts), "max_drop_points": max_drop}


def mark_unusable(variants: dict[str, dict[str, Any]], accuracy: dict[str, float], max_drop: float) -> None:
    """Flag variants that lose more than max_drop accuracy points against fp32 (auto skips them)."""
    for name, acc in accuracy.items():
        drop = (accuracy["fp32"] - acc) * 100
        if name != "fp32" and drop > max_drop:
            variants[name]["usable"] = False
            variants[name]["unusable_reason"] = f"loses {drop:.2f} accuracy points vs fp32 (limit {max_drop})"

