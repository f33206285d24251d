"""`sentictl score`: files or stdin to JSON lines."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import config
from ..console import line
from ..exitcodes import BAD_RECORDS
from .options import CONTEXT, cache_options, load_model, model_options, open_cache, opt


@click.command("score", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@model_options
@cache_options
@opt("--format", "fmt", env="FORMAT", type=click.Choice(["txt", "jsonl", "json", "csv", "tsv"]), default=None,
     help="Input format (default: by extension: .jsonl/.ndjson → jsonl, .json → a JSON array of strings or "
          "objects (or JSON lines, if it does not start with '['), .csv → csv, .tsv/.tab → tsv, else one text per line).")
@opt("--field", env="FIELD", default="text",
     help="JSONL / JSON array of objects: the field holding the text (dots reach nested fields).")
@opt("--column", env="COLUMN", default="text", help="CSV / TSV: the column holding the text (named in the header row).")
@opt("--output", env="OUTPUT", type=click.Choice(["jsonl", "csv"]), default="jsonl", help="Output format on stdout.")
@opt("--errors", "errors_path", env="ERRORS", type=click.Path(dir_okay=False), default=None,
     help="Write bad-record reports (JSON lines) to this file instead of stderr (never one of the inputs).")
@opt("--max-chars", env="MAX_CHARS", type=click.IntRange(min=1), default=config.DEFAULT_MAX_CHARS,
     help="Texts longer than this many characters are reported as bad records.")
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
    (a bad model folder, an unreadable input, stdout or --errors is an input file, a missing
    directory, a full disk); 2 usage error; 3 finished, but some records were bad; 130 interrupted.

    \b
    Examples:
     echo "Shares surged after record earnings" | sentictl score
     sentictl score headlines.txt news.jsonl --field title > results.jsonl
     sentictl score tweets.csv --column text --output csv > scored.csv
     sentictl score export.tsv --column body        # or: --format tsv for stdin
     sentictl score items.json --field title        # [{"title": ...}, ...] or ["...", ...]
    """
    from ..engine import Engine
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
            Engine(model, cache, max_chars=opts["max_chars"]), inputs, fmt=opts["fmt"], field_name=opts["field"],
            column=opts["column"], output=opts["output"], errors=errors, progress=opts["progress"],
            errors_name=errors_path,
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
