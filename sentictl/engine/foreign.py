"""Model folders written by optimum (no manifest.json): read as if sentictl had exported them.

``optimum-cli export onnx --task text-classification`` writes ``model.onnx``, ``config.json`` and
the tokenizer files; ``optimum-cli onnxruntime quantize`` writes ``model_quantized.onnx`` (plus
``ort_config.json``) beside copies of the same. Such a folder carries everything the engine needs
except what only an export measures: no recorded sha256, no parity figures. :func:`synthesize`
builds the manifest the engine would otherwise read:

- labels from ``config.json``'s ``id2label``; max length from ``tokenizer_config.json``'s
  ``model_max_length`` capped by ``config.json``'s ``max_position_embeddings``;
- the tokenizer from ``tokenizer.json``, its [CLS]/[SEP]/[PAD] tokens from the tokenizer config;
- one variant per ``.onnx`` file, its precision inferred from the name (``model_quantized``,
  ``*_int8``, ``*quantized*`` → int8; ``*fp16*`` → fp16; anything else fp32);
- ``sha256`` left empty: :class:`sentictl.engine.verified.VerifiedFiles` hashes the files a model runs (trusting a
  verified stamp, see :mod:`sentictl.engine.integrity`) and derives the fingerprint from those
  hashes, so an edited file is a new model, never a stale cache entry. That includes every file
  the graph's external-data entries name (read from the graph itself, whatever the file is called:
  ``model.onnx_data``, ``model.onnx.data``, ``weights.bin``).

Hot path: orjson (via jsonfile) and pathlib only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ManifestError, ModelNotFound
from .jsonfile import read_object

KIND = "optimum"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
# Ordered by preference: the first file of a precision gets the plain variant name (fp32, int8,
# fp16) that provider choice and --variant use; any further one is named after its file stem.
_PREFERRED = ("model.onnx", "model_optimized.onnx", "model_quantized.onnx", "model_int8.onnx", "model_fp16.onnx")
# Models whose position ids start after the padding index: two positions fewer are usable.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "bart", "mbart"}
_NO_LIMIT = 10**8  # transformers' "no limit" sentinel for model_max_length is 1e30


def looks_like(model_dir: Path) -> bool:
    """Whether a folder without manifest.json has the shape of an optimum export (an .onnx + config.json)."""
    return bool(onnx_files(model_dir)) or (Path(model_dir) / CONFIG).is_file()


def onnx_files(model_dir: Path) -> list[str]:
    """The .onnx files at the top of a folder, preferred names first."""
    try:
        names = sorted(p.name for p in Path(model_dir).iterdir() if p.suffix == ".onnx" and p.is_file())
    except OSError:
        return []
    return sorted(names, key=lambda n: (_PREFERRED.index(n) if n in _PREFERRED else len(_PREFERRED), n))


def precision(file_name: str) -> str:
    """fp32, int8 or fp16, from the file name alone (optimum records it nowhere else it can be read cheaply)."""
    stem = file_name.rsplit(".", 1)[0].lower()
    if "quantized" in stem or "int8" in stem or stem.endswith(("_q8", "_qint8", "_quint8")):
        return "int8"
    if "fp16" in stem or "float16" in stem:
        return "fp16"
    return "fp32"


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_object(path, what)
    except FileNotFoundError:
        return {}


def _token(value: Any) -> str | None:
    """A special token as tokenizer configs write it: a string, or {"content": ...}."""
    if isinstance(value, str) and value:
        return value
    content = value.get("content") if isinstance(value, dict) else None
    if isinstance(content, str) and content:
        return content
    return None


def _labels(cfg: dict[str, Any], path: Path) -> dict[str, str]:
    raw = cfg.get("id2label")
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"{path} has no id2label map: is this a text-classification model?")
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ManifestError(f"{path}: id2label keys must be class ids (0, 1, ...)") from None
    if sorted(labels) != list(range(len(labels))):
        raise ManifestError(f"{path}: id2label must number the classes 0..{len(labels) - 1}")
    return {str(k): labels[k] for k in sorted(labels)}


def _declares_max_length(cfg: dict[str, Any], tok_cfg: dict[str, Any]) -> bool:
    """Whether the folder says how long a text may be (else _max_length assumes BERT's 512)."""
    positions, declared = cfg.get("max_position_embeddings"), tok_cfg.get("model_max_length")
    return (isinstance(positions, int) and not isinstance(positions, bool) and positions > 2) or (
        isinstance(declared, (int, float)) and not isinstance(declared, bool) and 2 < declared < _NO_LIMIT
    )


def _max_length(cfg: dict[str, Any], tok_cfg: dict[str, Any]) -> int:
    limits = []
    positions = cfg.get("max_position_embeddings")
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 2:
        limits.append(positions - 2 if cfg.get("model_type") in _OFFSET_POSITIONS else positions)
    declared = tok_cfg.get("model_max_length")
    if isinstance(declared, (int, float)) and not isinstance(declared, bool) and 2 < declared < _NO_LIMIT:
        limits.append(int(declared))
    return min(limits) if limits else 512


def _special_tokens(model_dir: Path, tok_cfg: dict[str, Any]) -> dict[str, str | None]:
    """[CLS], [SEP] and [PAD] as the tokenizer names them (RoBERTa: <s>, </s>, <pad>)."""
    found: dict[str, str | None] = {k: _token(tok_cfg.get(k)) for k in ("cls_token", "sep_token", "pad_token")}
    if None in found.values():
        special = _json(model_dir / "special_tokens_map.json", "special tokens map")
        found = {key: value or _token(special.get(key)) for key, value in found.items()}
    if found["cls_token"] is None or found["sep_token"] is None:
        # Last resort: the post-processor that adds them (BertProcessing / RobertaProcessing).
        post = _json(model_dir / TOKENIZER, "tokenizer").get("post_processor") or {}
        for key, field in (("cls_token", "cls"), ("sep_token", "sep")):
            pair = post.get(field) if isinstance(post, dict) else None
            if found[key] is None and isinstance(pair, list) and pair and isinstance(pair[0], str):
                found[key] = pair[0]
    return found


def problem(model_dir: Path) -> str | None:
    """Why a folder without manifest.json cannot be read as an optimum folder (None: it can)."""
    model_dir = Path(model_dir)
    files = onnx_files(model_dir)
    has_config = (model_dir / CONFIG).is_file()
    if not files and not has_config:
        return "has no manifest.json and no model.onnx + config.json"
    if not files:
        return (
            f"has {CONFIG} but no .onnx file: a PyTorch checkpoint? Run `sentictl export --model {model_dir}` "
            f"(or `optimum-cli export onnx --task text-classification`)"
        )
    if not has_config:
        return f"has {files[0]} but no {CONFIG} (and no manifest.json): copy the checkpoint's {CONFIG} next to it"
    if not (model_dir / TOKENIZER).is_file():
        return f"has {files[0]} and {CONFIG} but no {TOKENIZER}: copy the checkpoint's fast tokenizer next to it"
    return None


def synthesize(model_dir: Path) -> dict[str, Any]:
    """The manifest of an optimum folder, built from config.json, the tokenizer files and the .onnx names."""
    model_dir = Path(model_dir)
    why = problem(model_dir)
    if why is not None:
        raise ModelNotFound(f"{model_dir} {why}")
    cfg = _json(model_dir / CONFIG, "label map")
    tok_cfg = _json(model_dir / "tokenizer_config.json", "tokenizer config")
    tokenizer = _tokenizer_entry(model_dir, cfg, tok_cfg)
    variants = _variants(model_dir)
    ort_cfg = _json(model_dir / "ort_config.json", "ORT config") if (model_dir / "ort_config.json").is_file() else {}
    return {
        "format": 1,
        "name": model_dir.resolve().name or "model",
        "source": {"id": model_dir.resolve().name or "model", "kind": KIND},
        "task": "text-classification",
        "architecture": (cfg.get("architectures") or [None])[0],
        "labels": _labels(cfg, model_dir / CONFIG),
        "max_length": _max_length(cfg, tok_cfg),
        "tokenizer": tokenizer,
        "variants": variants,
        "parity": None,
        "foreign": {
            "kind": KIND,
            "note": "no manifest.json: labels from config.json, fingerprint from the files' sha256, no parity figures",
            "quantization": ort_cfg.get("quantization") if isinstance(ort_cfg.get("quantization"), dict) else None,
            # Neither max_position_embeddings nor model_max_length: 512 is a guess the engine checks at load.
            "max_length_assumed": not _declares_max_length(cfg, tok_cfg),
        },
    }


def _tokenizer_entry(model_dir: Path, cfg: dict[str, Any], tok_cfg: dict[str, Any]) -> dict[str, Any]:
    """The manifest's tokenizer entry: the file, and the tokens that frame and pad a text."""
    special = _special_tokens(model_dir, tok_cfg)
    if special["cls_token"] is None or special["sep_token"] is None:
        raise ManifestError(
            f"{model_dir}: the tokenizer names no [CLS]/[SEP] tokens (tokenizer_config.json): "
            f"sentictl runs encoder classifiers (BERT, RoBERTa, ...) only"
        )
    pad_id = cfg.get("pad_token_id")
    return {
        "file": TOKENIZER,
        "sha256": None,  # hashed when the model is loaded (VerifiedFiles)
        "cls_token": special["cls_token"],
        "sep_token": special["sep_token"],
        "pad_token": special["pad_token"],
        "pad_id": pad_id if isinstance(pad_id, int) and not isinstance(pad_id, bool) and pad_id >= 0 else None,
    }


def _variants(model_dir: Path) -> dict[str, dict[str, Any]]:
    """One variant per .onnx file (hashes left for the load to fill in), with the weights file beside it."""
    variants: dict[str, dict[str, Any]] = {}
    for name in onnx_files(model_dir):
        kind = precision(name)
        key = kind if kind not in variants else name.rsplit(".", 1)[0]
        variants[key] = {
            "file": name,
            "sha256": None,
            "precision": kind,
            "provider": "cuda" if kind == "fp16" else "cpu",
            "usable": True,
        }
        # Weights kept beside the graph (optimum names them model.onnx_data, onnx and sentictl
        # model.onnx.data): hashed with it, so an edited weights file is a new model too.
        for data in (name + "_data", name + ".data"):
            if (model_dir / data).is_file():
                variants[key]["data"] = {"file": data, "sha256": None}
                break
    return variants


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a foreign manifest's fingerprint covers beyond labels, max length and file hashes.

    The settings read from the tokenizer config (which tokens frame a text and pad it) change
    results too; the folder's name does not, so a moved or copied folder keeps its cache entries.
    """
    tok = manifest["tokenizer"]
    out: dict[str, Any] = {
        "kind": manifest["foreign"]["kind"],
        "tokens": [tok.get("cls_token"), tok.get("sep_token"), tok.get("pad_token"), tok.get("pad_id")],
    }
    # Weights files the graph names besides <graph>.data / <graph>_data (ONNX's location can be any
    # name, e.g. weights.bin): [location, sha256] pairs the engine records when it loads the variant.
    # Only when there are some, so every other folder keeps the fingerprint (and cache entries) it had.
    extra = manifest["foreign"].get("external_data")
    if extra:
        out["external_data"] = extra
    return out
