"""A model directory's manifest: reading and checking it, the fingerprint, and file verification."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from .. import config
from ..errors import ManifestError, ModelNotFound
from . import integrity

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

# How click reads a boolean flag from its environment variable (SENTICTL_NO_VERIFY).
_TRUE = ("1", "true", "t", "yes", "y", "on")


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """Read and sanity-check ``manifest.json`` of a model directory."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        if not Path(model_dir).exists():
            raise ModelNotFound(
                f"no model in {model_dir}: run `sentictl export` first "
                f"(or pass --model-dir / set SENTICTL_MODEL_DIR to an exported model)"
            )
        raise ModelNotFound(f"{model_dir} has no {MANIFEST}: is it a directory written by `sentictl export`?")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run `sentictl export`") from None
    for key in ("labels", "max_length", "variants", "tokenizer"):
        if key not in manifest:
            raise ManifestError(f"{path} lacks '{key}'; re-run `sentictl export`")
    if manifest.get("format", 0) > MANIFEST_FORMAT:
        raise ManifestError(f"{path} was written by a newer sentictl (format {manifest['format']}); upgrade sentictl")
    return manifest


def fingerprint(manifest: dict[str, Any], variant: str) -> str:
    """A stable id for (model, variant): changes whenever weights, tokenizer or labels change."""
    v = manifest["variants"][variant]
    identity = {
        "source": manifest.get("source"),
        "labels": manifest["labels"],
        "max_length": manifest["max_length"],
        "tokenizer": manifest["tokenizer"].get("sha256"),
        "variant": variant,
        "sha256": v.get("sha256"),
    }
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def verify(model_dir: Path, mode: str = "always") -> list[str]:
    """Check every file the manifest names against its sha256; returns the problems found.

    Files that match are stamped (see sentictl.integrity), so the next load need not hash them.
    """
    manifest = read_manifest(model_dir)
    problems = []
    entries = [("tokenizer", manifest["tokenizer"])] + list(manifest["variants"].items())
    for name, entry in entries:
        if not entry.get("shipped", True):
            continue
        path = Path(model_dir) / entry["file"]
        if not path.is_file():
            problems.append(f"{name}: {entry['file']} is missing")
        elif entry.get("sha256") and not integrity.matches(path, entry["sha256"], mode):
            problems.append(f"{name}: {entry['file']} does not match its sha256")
    return problems


def default_verify_mode() -> str:
    """'off' when SENTICTL_NO_VERIFY is set to a true value (as --no-verify), else 'stamp'."""
    value = (config.getenv("NO_VERIFY") or "").strip().lower()
    return "off" if value in _TRUE else "stamp"
