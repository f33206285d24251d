"""`sentictl info`: which model a command would use, why, and how."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__, config
from ..exitcodes import CHECK_FAILED
from .options import CONTEXT, load_model, model_options, opt


@click.command("info", context_settings=CONTEXT)
@model_options
@opt("--verify", env="INFO_VERIFY", is_flag=True,
     help="Also check every file's sha256 against the manifest; exit 4 if one differs (a folder optimum wrote "
          "records none: \"verified\" is null there).")
def info(**opts: Any) -> None:
    """Show which model a command would use, why, and how it would run it (JSON).

    Also reads a folder written by `optimum-cli export onnx` (no manifest.json): "origin" says so,
    and "parity" is null there, as nothing was measured.

    \b
    Exit status: 0 described; 1 the model cannot be loaded; 2 usage error; 4 --verify found a file
    that does not match manifest.json.

    \b
    Examples:
     sentictl info
     sentictl info --model-dir models/finbert --provider cpu --verify
    """
    import orjson

    from ..engine.model import MANIFEST, is_foreign, verify

    resolved = config.resolve_model_dir(opts["model_dir"])
    problems: list[str] | None = None
    if opts["verify"] and (resolved.path / MANIFEST).is_file():
        # Hash every file first (matching ones get stamped, so loading does not hash them again);
        # a directory with problems is still described, loaded without verification.
        problems = verify(resolved.path)
    model = load_model(opts, quiet=True, verify="off" if problems else "stamp")
    out = {"sentictl": __version__, "resolved_because": resolved.reason, "bundled": resolved.bundled, **model.info()}
    out["variants"] = {
        name: {**{k: v.get(k) for k in ("file", "precision", "provider", "usable") if k in v},
               **({"weights_file": v["data"].get("file")} if isinstance(v.get("data"), dict) else {})}
        for name, v in model.manifest["variants"].items()
    }
    out["cache"] = str(config.default_cache_path())
    foreign = is_foreign(model.manifest)
    out["manifest"] = None if foreign else MANIFEST
    if foreign:
        out["origin"] = (f"{model.manifest['foreign']['kind']} folder without {MANIFEST}: labels from config.json, "
                         f"fingerprint from the files' sha256, no parity figures")
        out["parity"] = None
    else:
        out["origin"] = "sentictl export"
        parity = model.manifest.get("parity")
        out["parity"] = parity.get("fp32_vs_pytorch_max_abs_diff") if isinstance(parity, dict) else None
    if opts["verify"]:
        if problems is None:
            problems = verify(model.model_dir)
        # Without a manifest no sha256 is recorded: nothing can be verified, only found missing.
        out["verified"] = None if foreign and not problems else not problems
        out["problems"] = problems
    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if opts["verify"] and out["problems"]:
        sys.exit(CHECK_FAILED)
