"""`sentictl info`: which model a command would use, why, and how."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__, config
from ..errors import SentictlError
from ..exitcodes import CHECK_FAILED
from .options import CONTEXT, load_model, model_options, opt


@click.command("info", context_settings=CONTEXT)
@model_options
@opt(
    "--verify",
    env="INFO_VERIFY",
    is_flag=True,
    help="Also check every file's sha256 against the manifest; exit 4 if one differs (a folder optimum wrote "
    'records none: "verified" is null there).',
)
def info(**opts: Any) -> None:
    """Show which model a command would use, why, and how it would run it (JSON).

    "chosen" gives the model directory as an absolute path and the reason it was picked (the default,
    models/finbert, is relative to the current directory). "variants" lists the variants whose files
    the folder ships; "not_shipped" names the ones the manifest keeps only figures for, and why.

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

    from ..engine.manifest import MANIFEST, verify
    from ..modelinfo import describe

    resolved = config.resolve_model_dir(opts["model_dir"])
    problems: list[str] | None = None
    if opts["verify"] and (resolved.path / MANIFEST).is_file():
        # Hash every file first (matching ones get stamped, so loading does not hash them again);
        # a directory with problems is still described, loaded without verification.
        problems = verify(resolved.path)
    try:
        model = load_model(opts, quiet=True, verify="off" if problems else "stamp")
    except SentictlError as exc:
        if not problems:
            raise
        # Files that fail their check may not load at all (a truncated weights file): the problems
        # are the answer, exit 4, not the loader's message.
        click.echo(orjson.dumps(_unloadable(resolved, problems, exc), option=orjson.OPT_INDENT_2).decode())
        sys.exit(CHECK_FAILED)
    from ..engine.rediscache import redact_url

    out = describe(
        model, resolved, redact_url(config.default_cache_location()), verify=opts["verify"], problems=problems
    )
    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if opts["verify"] and out["problems"]:
        sys.exit(CHECK_FAILED)


def _unloadable(resolved: Any, problems: list[str], exc: Exception) -> dict[str, Any]:
    """What info --verify says of a folder whose files failed their check and cannot even be loaded."""
    from ..engine.manifest import read_manifest

    manifest = read_manifest(resolved.path)
    return {
        "sentictl": __version__,
        "chosen": {"path": str(resolved.path.absolute()), "reason": resolved.reason, "bundled": resolved.bundled},
        "model_dir": str(resolved.path),
        "name": manifest.get("name"),
        "source": manifest.get("source"),
        "loadable": False,
        "load_error": str(exc),
        "verified": False,
        "problems": problems,
    }
