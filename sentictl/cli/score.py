"""`sentictl score`: files or stdin to JSON lines."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import config
from ..console import line, notice
from ..exitcodes import BAD_RECORDS
from .options import CONTEXT, cache_file, cache_options, load_model, model_options, open_cache, opt

# The keys of every result: a --keep column of the same name would be ambiguous.
RESULT_KEYS = ("text", "label", "score", "scores", "model", "cache_hit", "truncated")


@click.command("score", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, type=click.Path(allow_dash=True))
@model_options
@cache_options
@opt("--format", "fmt", env="FORMAT", type=click.Choice(["txt", "jsonl", "json", "csv", "tsv"]), default=None,
     help="Input format (default: by extension: .jsonl/.ndjson → jsonl, .json → a JSON array of strings or "
          "objects (or JSON lines, if it does not start with '['), .csv → csv, .tsv/.tab → tsv, else one text per line).")
@opt("--field", env="FIELD", default="text",
     help="JSONL / JSON array of objects: the field holding the text (dots reach nested fields).")
@opt("--column", env="COLUMN", default="text", help="CSV / TSV: the column holding the text (named in the header row).")
@opt("--keep", env="KEEP", multiple=True, metavar="COLUMN",
     help="Copy this input column (CSV/TSV) or field (JSONL/JSON objects; dots reach nested fields) into each "
          "result, before its own keys, so results join back to the input (e.g. --keep id). Repeatable; "
          "absent values are null (an empty CSV cell).")
@opt("--output", env="OUTPUT", type=click.Choice(["jsonl", "csv"]), default="jsonl", help="Output format on stdout.")
@opt("--errors", "errors_path", env="ERRORS", type=click.Path(dir_okay=False), default=None,
     help="Write bad-record reports (JSON lines) to this file instead of stderr (never one of the inputs).")
@opt("--max-chars", env="MAX_CHARS", type=click.IntRange(min=1), default=config.DEFAULT_MAX_CHARS,
     help="Texts longer than this many characters are reported as bad records (too_long). A line or record "
          "is never read past 4 bytes per character (12 in JSON) plus its line ending: the rest of a longer "
          "one is skipped unread, so memory stays flat whatever the input.")
@opt("--progress/--no-progress", env="PROGRESS", default=None,
     help="Progress bar for file inputs (default: when stderr is a terminal).")
@opt("-q", "--quiet", env="QUIET", is_flag=True, help="No notices or summary line on stderr.")
def score(**opts: Any) -> None:
    """Classify texts from files or stdin; write one JSON result per line.

    Each result: {"text", "label", "score", "scores": {label: prob}, "model", "cache_hit"}
    plus "truncated": true when the text was cut to the model's limit.

    Bad records (invalid UTF-8, bad JSON, a missing field or column value, a text over
    --max-chars) are reported as {"source", "line", "reason", "error"} on stderr (or --errors FILE)
    and the run goes on ("line" is the item number in a JSON array). Blank lines are skipped and counted.

    \b
    Exit status: 0 all records scored; 1 the run could not start or an output could not be written
    (a bad model folder, a missing or unreadable input, stdout or --errors is an input file or
    the result cache, a missing directory, a full disk); 2 usage error; 3 finished, but some
    records were bad; 130 interrupted.

    \b
    Examples:
     echo "Shares surged after record earnings" | sentictl score
     sentictl score headlines.txt news.jsonl --field title > results.jsonl
     sentictl score tweets.csv --column text --keep id --output csv > scored.csv
     sentictl score export.tsv --column body        # or: --format tsv for stdin
     sentictl score items.json --field title        # [{"title": ...}, ...] or ["...", ...]
    """
    from ..engine import Engine
    from ..io import check_inputs
    from ..outputs import (
        check_output_path,
        check_stdout,
        close_output,
        flush_stdout,
        open_output,
    )
    from ..score import run_score

    inputs = opts["inputs"] or ["-"]
    errors_path = opts["errors_path"]
    keep = list(dict.fromkeys(opts["keep"]))
    _check_keep(keep, inputs, opts["fmt"])
    check_inputs(inputs)
    # Outputs never clobber an input or the result cache: refuse before loading anything (and
    # before --errors is emptied or the cache is opened).
    cache_path = cache_file(opts)  # None for a Redis URL: no file an output could overwrite
    check_stdout(inputs, cache=cache_path)
    if errors_path:
        check_output_path(errors_path, inputs, "--errors", cache=cache_path)
    model = load_model(opts, quiet=opts["quiet"])
    if opts["output"] == "csv" and (clash := [k for k in keep if k in model.labels]):
        raise click.UsageError(f"--keep {clash[0]}: the CSV output already has a {clash[0]!r} column (a label "
                               f"of the model)")
    errors = open_output(errors_path, inputs, "--errors", cache=cache_path) if errors_path else None
    cache = None
    try:
        cache = open_cache(opts)
        if "-" in inputs and _stdin_is_terminal() and not opts["quiet"]:
            notice("reading texts from stdin, one per line; press Ctrl-D to end (or name a file to score)")
        summary = run_score(
            Engine(model, cache, max_chars=opts["max_chars"]), inputs, fmt=opts["fmt"], field_name=opts["field"],
            column=opts["column"], output=opts["output"], errors=errors, progress=opts["progress"],
            errors_name=errors_path, keep=keep,
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
        line(summary.line())
    if summary.errors:
        sys.exit(BAD_RECORDS)


def _check_keep(keep: list[str], inputs: list[str], fmt: str | None) -> None:
    """--keep names columns or fields: refuse names a result already has, and inputs without columns."""
    from ..io import detect_format

    for name in keep:
        if name in RESULT_KEYS:
            raise click.UsageError(f"--keep {name}: a result already has a {name!r} key (choose another column)")
    if keep:
        plain = [n for n in inputs if detect_format(n, fmt) == "txt"]
        if plain:
            where = "stdin" if plain[0] == "-" else plain[0]
            raise click.UsageError(f"--keep needs columns or fields, and {where} is read as plain lines: "
                                   f"use a CSV, TSV, JSONL or JSON input (or --format)")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False
