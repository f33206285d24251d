"""`sentictl info`: which model a command would use, why, and how."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__, config
from .options import CONTEXT, load_model, model_options, opt


@click.command("info", context_settings=CONTEXT)
@model_options
@opt("--verify", is_flag=True, help="Also check every file's sha256 against the manifest.")
def info(**opts: Any) -> None:
    """Show which model a command would use, why, and how it would run it (JSON).

    \b
    Examples:
     sentictl info
     sentictl info --model-dir models/finbert --provider cpu --verify
    """
    import orjson

    from ..engine.model import MANIFEST, verify

    resolved = config.resolve_model_dir(opts["model_dir"])
    problems: list[str] | None = None
    if opts["verify"] and (resolved.path / MANIFEST).is_file():
        # Hash every file first (matching ones get stamped, so loading does not hash them again);
        # a directory with problems is still described, loaded without verification.
        problems = verify(resolved.path)
    model = load_model(opts, quiet=True, verify="off" if problems else "stamp")
    out = {"sentictl": __version__, "resolved_because": resolved.reason, "bundled": resolved.bundled, **model.info()}
    out["variants"] = {
        name: {k: v.get(k) for k in ("file", "precision", "provider", "usable") if k in v}
        for name, v in model.manifest["variants"].items()
    }
    out["cache"] = str(config.default_cache_path())
    if opts["verify"]:
        if problems is None:
            problems = verify(model.model_dir)
        out["verified"] = not problems
        out["problems"] = problems
    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if opts["verify"] and out["problems"]:
        sys.exit(1)
