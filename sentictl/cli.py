"""The command line: thin click commands, each calling one library function.

Every option falls back to a ``SENTICTL_*`` environment variable (shown in --help).
Library errors (SentictlError) become a one-line message on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from . import __version__, config
from .errors import SentictlError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}


class Group(click.Group):
    """Maps library errors to exit 1 with a clean message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SentictlError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # `sentictl score big.txt | head` closed our stdout: not an error worth a traceback.
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("sentictl: interrupted", err=True)
            ctx.exit(130)


def _opt(*names: str, env: str | None = None, **kwargs: Any) -> Callable:
    if env:
        kwargs.setdefault("envvar", config.env(env))
        kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def model_options(f: Callable) -> Callable:
    """Options that choose and load a model: shared by score, serve, bridge, bench and eval."""
    options = [
        _opt("--model-dir", env="MODEL_DIR", type=click.Path(file_okay=False), default=None,
             help="Exported model directory. Default: models/finbert if exported, else the bundled model."),
        _opt("--provider", env="PROVIDER", type=click.Choice(config.PROVIDERS), default="auto",
             help="Execution provider; auto picks cuda > coreml > cpu with the matching variant."),
        _opt("--variant", env="VARIANT", default=None,
             help="Force a variant (fp32, int8, fp16, coreml) instead of the provider's choice."),
        _opt("--threads", env="THREADS", type=click.IntRange(min=1), default=None,
             help="Intra-op threads for ONNX Runtime (default: all cores)."),
        _opt("--long", "long_mode", env="LONG", type=click.Choice(config.LONG_MODES), default="truncate",
             help="Texts over the model's max length: truncate (flagged \"truncated\": true) or chunk "
                  "(split at sentences, probabilities averaged by length)."),
        _opt("--max-batch-tokens", env="MAX_BATCH_TOKENS", type=click.IntRange(min=1),
             default=config.DEFAULT_MAX_BATCH_TOKENS, help="Token budget of one inference batch (batch x padded length)."),
        _opt("--no-verify", env="NO_VERIFY", is_flag=True, default=False, callback=_no_verify,
             help="Run model files that do not match the sha256 in manifest.json (a folder edited on purpose). "
                  "Nothing is hashed; results are cached under an 'unverified' fingerprint derived from the "
                  "files' size, mtime and inode, never under the genuine model's, so the two never share entries."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _no_verify(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--no-verify also reaches models that library code loads itself (eval, bench) via the environment."""
    if value:
        import os

        os.environ[config.env("NO_VERIFY")] = "1"
    return value


def cache_options(f: Callable) -> Callable:
    """Options for the shared result cache."""
    options = [
        _opt("--cache", "cache_path", env="CACHE", type=click.Path(dir_okay=False), default=None,
             help="Result cache file (SQLite), shared by every command. Default: the user cache dir."),
        _opt("--no-cache", is_flag=True, default=False, help="Neither read nor write the result cache."),
        _opt("--cache-ttl", env="CACHE_TTL", type=click.FloatRange(min=0), default=None,
             help="Ignore cached results older than this many seconds (0 or unset: keep forever)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_model(opts: dict[str, Any], quiet: bool = False, verify: str = "stamp", **extra: Any):
    """Build the engine from model_options values (extra: Model keyword arguments).

    verify: how the model files are checked against manifest.json ("always" for long-running
    serve and bridge, "stamp" otherwise; see sentictl.integrity); --no-verify makes it "off".
    """
    from .model import load

    if opts.get("no_verify"):
        verify = "off"
    return load(
        opts["model_dir"], quiet=quiet, provider=opts["provider"], variant=opts["variant"],
        threads=opts["threads"], long=opts["long_mode"], max_batch_tokens=opts["max_batch_tokens"],
        verify=verify, **extra,
    )


def open_cache(opts: dict[str, Any]):
    """The shared cache from cache_options values, or None with --no-cache."""
    if opts.get("no_cache"):
        return None
    from .cache import ResultCache

    path = opts.get("cache_path") or config.default_cache_path()
    return ResultCache(path, ttl=opts.get("cache_ttl"))


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="sentictl")
def cli() -> None:
    """Financial-sentiment classification with ONNX Runtime: export, score, serve, bridge.

    \b
    Quick start:
      echo "Profit fell sharply and the company cut its outlook." | sentictl score
      sentictl export                       # FinBERT from the Hugging Face hub → models/finbert
      sentictl score headlines.txt > results.jsonl
    """


@cli.command(context_settings=CONTEXT)
@_opt("--model", "model", env="EXPORT_MODEL", default=config.DEFAULT_HUB_MODEL,
      help="Hugging Face hub id or a local checkpoint directory.")
@_opt("--revision", default=None, help="Hub revision (branch, tag or commit) to export.")
@_opt("--out", type=click.Path(file_okay=False), default=None,
      help="Model directory to write. Default: models/<model name>, e.g. models/finbert.")
@_opt("--variants", default="auto",
      help="auto (fp32,int8), all, or a comma list of fp32,int8,fp16,coreml. fp32 is always built.")
@_opt("--max-length", type=click.IntRange(min=8), default=None,
      help="Maximum tokens per text (default: the checkpoint's limit, 512 for FinBERT).")
@_opt("--opset", type=click.IntRange(min=11), default=None, help="ONNX opset (default: optimum's choice).")
@_opt("--eval-data", type=click.Path(exists=True, dir_okay=False), default=None,
      help="Labelled CSV (label,text) to measure each variant's accuracy.")
@_opt("--max-drop", type=click.FloatRange(min=0), default=1.0,
      help="With --eval-data: mark a variant unusable if it loses more accuracy points than this vs fp32.")
@_opt("--keep", default=None,
      help="Comma list of variants whose files stay in the directory (default: all built); "
           "the others keep only their figures in the manifest. E.g. --keep int8 for a small bundle.")
@_opt("--quantize-ops", default="MatMul",
      help="int8: ONNX operator types to quantize, comma separated (MatMul keeps accuracy; "
           "MatMul,Gather also shrinks the embedding table 4x).")
@_opt("--fp32-layers", default="0",
      help="int8: encoder layers (comma list of indices, or 'none') left in fp32. The first layer is "
           "the most sensitive to quantization; keeping it lifts agreement with fp32 for ~8% speed.")
@_opt("--force", is_flag=True, help="Replace an existing model directory.")
def export(**opts: Any) -> None:
    """Export a checkpoint to an ONNX model directory (needs the export extra).

    Downloads (or loads) the checkpoint, exports it with optimum, optimizes the graph, builds the
    requested variants (int8: dynamic per-channel quantization for this CPU; fp16: for CUDA;
    coreml: static shapes for Apple's CoreML provider), checks fp32 against PyTorch on 50
    built-in sentences and writes manifest.json, tokenizer.json and the .onnx files.

    \b
    Examples:
      sentictl export                                  # ProsusAI/finbert → models/finbert
      sentictl export --model ./my-checkpoint --out models/mine --variants all
      sentictl export --eval-data labelled.csv --max-drop 0.5
    """
    from .export import run_export

    manifest = run_export(
        model=opts["model"], revision=opts["revision"], out=opts["out"], variants=opts["variants"],
        max_length=opts["max_length"], opset=opts["opset"], eval_data=opts["eval_data"],
        max_drop=opts["max_drop"], force=opts["force"], keep=opts["keep"],
        quantize_ops=[op.strip() for op in opts["quantize_ops"].split(",") if op.strip()],
        fp32_layers=_layers(opts["fp32_layers"]),
    )
    from .export import resolve_out

    out = resolve_out(opts["model"], opts["out"])  # the folder run_export wrote, absolute
    click.echo(f"sentictl: wrote {out} ({', '.join(manifest['variants'])})", err=True)


def _layers(spec: str) -> list[int]:
    """'0,11' → [0, 11]; 'none' or '' → []."""
    if not spec or spec.strip().lower() == "none":
        return []
    try:
        return sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(f"{spec!r}: use layer indices like 0 or 0,11, or 'none'", param_hint="--fp32-layers") from None


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@model_options
@cache_options
@_opt("--format", "fmt", type=click.Choice(["txt", "jsonl", "csv"]), default=None,
      help="Input format (default: by extension; .jsonl/.ndjson → jsonl, .csv → csv, else one text per line).")
@_opt("--field", default="text", help="JSONL: the field holding the text (dots reach nested fields).")
@_opt("--column", default="text", help="CSV: the column holding the text.")
@_opt("--output", type=click.Choice(["jsonl", "csv"]), default="jsonl", help="Output format on stdout.")
@_opt("--errors", "errors_path", type=click.Path(dir_okay=False), default=None,
      help="Write bad-record reports (JSON lines) to this file instead of stderr (never one of the inputs).")
@_opt("--max-chars", env="MAX_CHARS", type=click.IntRange(min=1), default=config.DEFAULT_MAX_CHARS,
      help="Texts longer than this many characters are reported as bad records.")
@_opt("--progress/--no-progress", default=None, help="Progress bar for file inputs (default: when stderr is a terminal).")
@_opt("-q", "--quiet", is_flag=True, help="No notices or summary line on stderr.")
def score(**opts: Any) -> None:
    """Classify texts from files or stdin; write one JSON result per line.

    Each result: {"text", "label", "score", "scores": {label: prob}, "model", "cache_hit"}
    plus "truncated": true when the text was cut to the model's limit.

    Bad records (invalid UTF-8, bad JSON, a missing field or column value, a text over
    --max-chars) are reported as {"source", "line", "error"} on stderr (or --errors FILE) and the
    run goes on. Blank lines are skipped and counted.

    \b
    Exit status: 0 all records scored, 2 some records were bad, 1 the run could not start or an
    output could not be written (stdout or --errors is an input file, a missing directory, a full disk).

    \b
    Examples:
      echo "Shares surged after record earnings" | sentictl score
      sentictl score headlines.txt news.jsonl --field title > results.jsonl
      sentictl score tweets.csv --column text --output csv > scored.csv
    """
    from .io import check_output_path, check_stdout, close_output, flush_stdout, open_output
    from .score import run_score

    inputs = opts["inputs"] or ["-"]
    errors_path = opts["errors_path"]
    # Outputs never clobber inputs: refuse before loading anything (and before --errors is emptied).
    check_stdout(inputs)
    if errors_path:
        check_output_path(errors_path, inputs, "--errors")
    model = load_model(opts, quiet=opts["quiet"])
    cache = open_cache(opts)
    errors = None
    try:
        errors = open_output(errors_path, inputs, "--errors") if errors_path else None
        summary = run_score(
            model, cache, inputs, fmt=opts["fmt"], field_name=opts["field"],
            column=opts["column"], output=opts["output"], errors=errors, max_chars=opts["max_chars"],
            progress=opts["progress"], errors_name=errors_path,
        )
        flush_stdout()
        if errors:
            close_output(errors, f"--errors to {errors_path}")
    finally:
        if errors and not errors.closed:
            try:
                errors.close()
            except OSError:
                pass  # already failing: the first error is the one reported
        if cache:
            cache.close()
    if not opts["quiet"]:
        click.echo(summary.line(), err=True)
    if summary.errors:
        sys.exit(2)


@cli.group(context_settings=CONTEXT)
def cache() -> None:
    """Inspect or empty the shared result cache."""


@cache.command("stats", context_settings=CONTEXT)
@_opt("--cache", "cache_path", env="CACHE", type=click.Path(dir_okay=False), default=None, help="Result cache file.")
def cache_stats(cache_path: str | None) -> None:
    """Show the cache file, its entry count and size, as JSON.

    \b
    Example:
      sentictl cache stats --cache /tmp/results.sqlite
    """
    import orjson

    from .cache import ResultCache

    with ResultCache(cache_path or config.default_cache_path(), strict=True) as c:
        stats = c.stats()
    stats.pop("hits"), stats.pop("misses")
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())


@cache.command("clear", context_settings=CONTEXT)
@_opt("--cache", "cache_path", env="CACHE", type=click.Path(dir_okay=False), default=None, help="Result cache file.")
@_opt("--expired", is_flag=True, help="Only remove entries older than --ttl seconds.")
@_opt("--ttl", type=click.FloatRange(min=0), default=None, help="Age limit in seconds for --expired.")
def cache_clear(cache_path: str | None, expired: bool, ttl: float | None) -> None:
    """Remove cached results (all of them, or only expired ones).

    \b
    Examples:
      sentictl cache clear
      sentictl cache clear --expired --ttl 86400
    """
    from .cache import ResultCache

    if expired and not ttl:
        raise click.UsageError("--expired needs --ttl SECONDS")
    # strict: asked about the cache itself, a cache that cannot be used is an error (exit 1); a
    # damaged file is moved aside and a fresh one started, which is how `clear` repairs it.
    with ResultCache(cache_path or config.default_cache_path(), ttl=ttl, strict=True) as c:
        removed = c.clear(expired_only=expired)
    click.echo(f"sentictl: removed {removed} cached results", err=True)


@cli.command(context_settings=CONTEXT)
@model_options
@_opt("--verify", is_flag=True, help="Also check every file's sha256 against the manifest.")
def info(**opts: Any) -> None:
    """Show which model a command would use, why, and how it would run it (JSON).

    \b
    Examples:
      sentictl info
      sentictl info --model-dir models/finbert --provider cpu --verify
    """
    import orjson

    from .model import MANIFEST, verify

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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sentictl")


def _register() -> None:
    """Attach the commands that live in their own modules (each keeps heavy imports inside)."""
    import importlib

    for module, names in (
        ("cli_serve", ("serve",)),
        ("cli_bridge", ("bridge",)),
        ("cli_bench", ("bench", "eval")),
    ):
        try:
            mod = importlib.import_module(f"sentictl.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sentictl.{module}":
                raise
            continue
        for name in names:
            command = getattr(mod, name.replace("-", "_") + "_command", None)
            if command is not None:
                cli.add_command(command, name)


_register()
