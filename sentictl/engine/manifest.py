"""A model directory's manifest: reading and checking it, the fingerprint, and file verification.

A folder without manifest.json that optimum wrote (model.onnx + config.json + tokenizer.json) is
read too: :mod:`sentictl.engine.foreign` builds its manifest from those files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from .. import config
from ..errors import ManifestError, ModelNotFound
from . import foreign, integrity
from .jsonfile import read_object

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
        if foreign.looks_like(Path(model_dir)):
            return foreign.synthesize(Path(model_dir))
        raise ModelNotFound(
            f"{model_dir} has no {MANIFEST} (nor model.onnx + config.json): is it a directory written by "
            f"`sentictl export` or `optimum-cli export onnx --task text-classification`?"
        )
    manifest = read_object(path, "model manifest", "re-run `sentictl export`")
    for key in ("labels", "max_length", "variants", "tokenizer"):
        if key not in manifest:
            raise ManifestError(f"{path} lacks '{key}'; re-run `sentictl export`")
    if manifest.get("format", 0) > MANIFEST_FORMAT:
        raise ManifestError(f"{path} was written by a newer sentictl (format {manifest['format']}); upgrade sentictl")
    return manifest


def check_model_dir(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a folder a door can run (sentictl export or optimum), or a one-line ModelNotFound/ManifestError.

    Cheap (reads JSON, hashes nothing): for a server to refuse a wrong --model-dir before it opens its port.
    """
    manifest = read_manifest(Path(model_dir))
    shipped = [v for v in manifest["variants"].values() if v.get("shipped", True)]
    if not shipped:
        raise ManifestError(f"{model_dir} ships no model file: re-run `sentictl export`")
    return manifest


def data_entries(variant: dict[str, Any]) -> list[dict[str, Any]]:
    """The external-data file a variant's graph keeps its weights in (``sentictl export``'s default), if any."""
    data = variant.get("data")
    return [data] if isinstance(data, dict) and isinstance(data.get("file"), str) else []


def is_foreign(manifest: dict[str, Any]) -> bool:
    """Whether the manifest was built from a folder without manifest.json (see sentictl.engine.foreign)."""
    return isinstance(manifest.get("foreign"), dict)


def fingerprint(manifest: dict[str, Any], variant: str) -> str:
    """A stable id for (model, variant): changes whenever weights, tokenizer or labels change."""
    v = manifest["variants"][variant]
    identity = {
        # A foreign folder's name is no part of its identity; the settings read from its tokenizer config are.
        "source": foreign.identity(manifest) if is_foreign(manifest) else manifest.get("source"),
        "labels": manifest["labels"],
        "max_length": manifest["max_length"],
        "tokenizer": manifest["tokenizer"].get("sha256"),
        "variant": variant,
        "sha256": v.get("sha256"),
    }
    data = data_entries(v)
    if data:  # only then: a single-file model keeps the fingerprint (and cache entries) it always had
        identity["data"] = [d.get("sha256") for d in data]
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def verify(model_dir: Path, mode: str = "always") -> list[str]:
    """Check every file the manifest names against its sha256; returns the problems found.

    Files that match are stamped (see sentictl.engine.integrity), so the next load need not hash them.
    The files kept for optimum and transformers (config.json, tokenizer_config.json, ...) are
    checked too, though sentictl never reads them. A folder without manifest.json records no
    sha256: only missing files can be found there.
    """
    manifest = read_manifest(model_dir)
    problems = []
    entries = [("tokenizer", manifest["tokenizer"])]
    for name, entry in manifest["variants"].items():
        entries.append((name, entry))
        entries += [(f"{name} weights", {**d, "shipped": entry.get("shipped", True)}) for d in data_entries(entry)]
    entries += [(f"optimum: {e.get('file')}", e) for e in manifest.get("optimum_files") or [] if isinstance(e, dict)]
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
