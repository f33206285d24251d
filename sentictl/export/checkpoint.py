"""The checkpoint an export reads: a local directory or a hub snapshot, and the tool versions it records."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import ExportError

_HUB_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "*.safetensors",
    "pytorch_model.bin",
]


def local_checkpoint(model: str) -> Path | None:
    """The resolved directory of a local checkpoint, or None when ``model`` is not a directory (a hub id)."""
    local = Path(model).expanduser()
    return local.resolve() if local.is_dir() else None


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
        raise ExportError(
            f"cannot get {model} from the Hugging Face hub ({type(exc).__name__}: {first_sentences(str(exc))})\n"
            f"  On a machine without hub access, export from a local checkpoint directory instead:\n"
            f"    sentictl export --model /path/to/finbert   # a folder with config.json, weights and vocab\n"
            f"  or point HF_HOME at a cache that already holds {model} (with HF_HUB_OFFLINE=1)."
        ) from None
    resolved = path.name if len(path.name) == 40 else revision
    return path, {"id": model, "revision": resolved or revision, "kind": "hub"}


def first_sentences(text: str, limit: int = 400) -> str:
    """The first line of an error, whole; past ``limit`` characters, cut after its last full sentence.

    Hub errors run to several lines (request ids, URLs); the first says what went wrong. A cut
    never falls mid-sentence: with no sentence end before ``limit``, the whole line is kept.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        return "no message"
    if len(line) <= limit:
        return line
    cut = max(line.rfind(end, 0, limit) for end in (". ", "! ", "? ", "; "))
    return line[: cut + 1] + " …" if cut > 0 else line


def tool_versions() -> dict[str, str]:
    """The installed versions of the packages an export depends on, for the manifest."""
    out = {}
    for dist in (
        "sentictl",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnx",
        "optimum",
        "optimum-onnx",
        "transformers",
        "torch",
        "tokenizers",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
