"""What ``sentictl info`` and :meth:`sentictl.Classifier.info` say about a loaded model: which folder
and why, how it runs, its variants, origin and parity figures, and (on request) its files' check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config

if TYPE_CHECKING:
    from .engine.model import Model


def describe(
    model: Model,
    resolved: config.ResolvedModel,
    cache: Path | str | None = None,
    *,
    verify: bool = False,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """The facts ``sentictl info`` prints about a loaded model: which folder and why, how it runs,
    its variants, origin and parity figures (+ "verified" and "problems" with verify; ``problems``:
    those already found, else the files are checked here)."""
    from . import __version__
    from .engine.manifest import MANIFEST, is_foreign
    from .engine.manifest import verify as verify_files

    out: dict[str, Any] = {
        "sentictl": __version__,
        "resolved_because": resolved.reason,
        "bundled": resolved.bundled,
        "chosen": {"path": str(Path(resolved.path).absolute()), "reason": resolved.reason, "bundled": resolved.bundled},
        **model.info(),
    }
    listed = model.manifest["variants"]
    out["variants"] = {
        name: {
            **{k: v.get(k) for k in ("file", "precision", "provider", "usable", "unusable_reason") if k in v},
            **({"weights_file": v["data"].get("file")} if isinstance(v.get("data"), dict) else {}),
        }
        for name, v in listed.items()
        if v.get("shipped", True)
    }
    out["not_shipped"] = {name: _not_shipped_reason(v) for name, v in listed.items() if not v.get("shipped", True)}
    out["cache"] = None if cache is None else str(cache)
    foreign = is_foreign(model.manifest)
    out["manifest"] = None if foreign else MANIFEST
    if foreign:
        out["origin"] = (
            f"{model.manifest['foreign']['kind']} folder without {MANIFEST}: labels from config.json, "
            f"fingerprint from the files' sha256, no parity figures"
        )
        out["parity"] = None
    else:
        out["origin"] = "sentictl export"
        parity = model.manifest.get("parity")
        out["parity"] = parity.get("fp32_vs_pytorch_max_abs_diff") if isinstance(parity, dict) else None
    if verify:
        if problems is None:
            problems = verify_files(model.model_dir)
        # Without a manifest no sha256 is recorded: nothing can be verified, only found missing.
        out["verified"] = None if foreign and not problems else not problems
        out["problems"] = problems
    return out


def _not_shipped_reason(variant: dict[str, Any]) -> str:
    """Why a variant the manifest lists cannot run: its file was left out of the folder at export."""
    size = variant.get("bytes")
    left_out = f"{variant.get('file')}" + (f" ({size / 1e6:.0f} MB)" if isinstance(size, int) else "")
    return (
        f"{left_out} is not in this folder: it was left out when the folder was made (as `sentictl export "
        f"--keep` does, to keep a bundle small) and the manifest keeps only its export figures, so score, serve, "
        f"eval and bench cannot run it"
    )
