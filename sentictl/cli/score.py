"""`sentictl score`: files or stdin to JSON lines."""

from __future__ import annotations

import os
import stat
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
@opt(
    "--format",
    "fmt",
    env="FORMAT",
    type=click.Choice(["txt", "jsonl", "json", "csv", "tsv", "parquet"]),
    default=None,
    help="Input format (default: by extension: .jsonl/.ndjson → jsonl, .json → a JSON array of strings or "
    "objects (or JSON lines, if it does not start with '['), .csv → csv, .tsv/.tab → tsv, .parquet → parquet "
    "(also a directory of Parquet files, or a quoted glob), else one text per line).",
)
@opt(
    "--field",
    env="FIELD",
    default="text",
    help="JSONL / JSON array of objects: the field holding the text (dots reach nested fields).",
)
@opt(
    "--column",
    env="COLUMN",
    default="text",
    help="CSV / TSV / Parquet: the column holding the text (named in the header row or the schema).",
)
@opt(
    "--keep",
    env="KEEP",
    multiple=True,
    metavar="COLUMN",
    help="Copy this input column (CSV/TSV) or field (JSONL/JSON objects; dots reach nested fields) into each "
    "result, before its own keys, so results join back to the input (e.g. --keep id). Repeatable; "
    "absent values are null (an empty CSV cell). Parquet columns keep their Arrow types in a Parquet output.",
)
@opt(
    "--keep-all",
    env="KEEP_ALL",
    is_flag=True,
    help="Parquet input: keep every input column (as --keep for each), e.g. to add scores to a table.",
)
@opt(
    "--output",
    env="OUTPUT",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default=None,
    show_default="jsonl",
    help="Output format (default: by the -o file's extension, .parquet/.csv, else jsonl). parquet: one row per "
    "input row, in order: the --keep columns, label, score, score_<label> per label, model, cache_hit and "
    "error (the reason code of a bad row, null when scored); it needs a file (-o, or stdout redirected to one).",
)
@opt(
    "-o",
    "--out",
    "out_path",
    env="OUT",
    type=click.Path(),
    default=None,
    help="Write results to this file instead of stdout (never one of the inputs or the cache), e.g. -o scored.parquet. "
    "With --ray, a Parquet output (-o NAME.parquet, -o DIR/, an existing directory, or --output parquet) is a "
    "DIRECTORY of part files (part-000000000.parquet, ...: in name order, the rows in input order); an existing "
    "one may hold only a former run's part files, which are replaced.",
)
@opt(
    "--errors",
    "errors_path",
    env="ERRORS",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write bad-record reports (JSON lines) to this file instead of stderr (never one of the inputs).",
)
@opt(
    "--max-chars",
    env="MAX_CHARS",
    type=click.IntRange(min=1),
    default=config.DEFAULT_MAX_CHARS,
    help="Texts longer than this many characters are reported as bad records (too_long). A line or record "
    "is never read past 4 bytes per character (12 in JSON) plus its line ending: the rest of a longer "
    "one is skipped unread, so memory stays flat whatever the input.",
)
@opt(
    "--progress/--no-progress",
    env="PROGRESS",
    default=None,
    help="Progress bar for file inputs (default: when stderr is a terminal).",
)
@opt(
    "--ray",
    "ray_address",
    env="RAY",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run on a Ray cluster with Ray Data (the ray extra): score's inputs (Parquet read by the cluster; text, "
    "JSONL, CSV/TSV and JSON read here, block by block) → an actor pool, one engine per actor → Parquet as a "
    "directory of part files written by the cluster (-o DIR or -o NAME.parquet: a path every node sees), or JSON "
    "lines (of the Parquet columns) to -o FILE or stdout, in input order. ADDRESS as ray.init takes it "
    "(ray://host:10001, auto); none: RAY_ADDRESS, else a local cluster of this machine's cores. --threads is per "
    "actor (default 1). Put it last or write --ray=ADDRESS. Example: sentictl score news/ --column headline --ray "
    "--workers 8 -o scored/",
)
@opt(
    "--workers",
    env="WORKERS",
    type=click.IntRange(min=1),
    default=None,
    help="--ray: actors, each with its own engine (default: the cluster's CPUs less one for reading, // --threads; "
    "a local cluster counts one CPU more than the cores, so there every core runs an actor).",
)
@opt(
    "--preserve-order/--no-preserve-order",
    env="PRESERVE_ORDER",
    default=True,
    help="--ray: write rows in input order (the default), or as actors finish them (faster on uneven "
    "clusters; join back with --keep id).",
)
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
     sentictl score news.parquet --column headline --keep id -o scored.parquet
    """
    from ..io import check_inputs, detect_format
    from ..parquet import check_columns

    inputs, fmt = _inputs(opts)
    ray = opts["ray_address"] is not None
    if ray:
        from .score_ray import ray_output

        output = ray_output(opts["output"], opts["out_path"])
    else:
        _refuse_directory(opts["out_path"])
        output = output_format(opts["output"], opts["out_path"])
    keep = list(dict.fromkeys(opts["keep"]))
    if opts["keep_all"]:
        keep = _keep_all(keep, inputs, fmt, opts["column"], output)
    _check_keep(keep, inputs, fmt, output)
    check_inputs(inputs)
    if any(detect_format(n, fmt) == "parquet" for n in inputs):
        check_columns(inputs, fmt, opts["column"])
    # Outputs never clobber an input or the result cache: refuse before loading anything (and
    # before -o or --errors is emptied or the cache is opened).
    cache_path = cache_file(opts)  # None for a Redis URL: no file an output could overwrite
    if ray:
        from .score_ray import score_ray

        score_ray(opts, inputs, keep, output, cache_path)
        return
    check_outputs(inputs, output, opts["out_path"], opts["errors_path"], cache_path)
    if opts["workers"] is not None or not opts["preserve_order"]:
        raise click.UsageError("--workers and --no-preserve-order go with --ray")
    _score_here(opts, inputs, keep, output, cache_path)


def _inputs(opts: dict[str, Any]) -> tuple[list[str], str | None]:
    """The inputs (stdin when none; directories and quoted globs of Parquet as their files) and --format."""
    from ..parquet import expand, is_parquet_name

    inputs = list(opts["inputs"]) or ["-"]
    fmt = opts["fmt"]
    if opts["ray_address"] is not None and _is_input(opts["ray_address"]):
        # `--ray data.parquet`: click took the input for the optional ADDRESS; it is an input.
        inputs, opts["ray_address"] = [opts["ray_address"], *(n for n in inputs if n != "-")], ""
    if any(fmt == "parquet" or is_parquet_name(n) for n in inputs):
        inputs = expand(inputs, fmt)  # directories and quoted globs → their files, before any check
    return inputs, fmt


def _refuse_directory(out_path: str | None) -> None:
    """-o names a file without --ray: a directory is refused as click refuses it for a file-only option."""
    if out_path and os.path.isdir(out_path):
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "out_path")
        click.Path(dir_okay=False).convert(out_path, param, ctx)


def check_outputs(
    inputs: list[str], output: str, out_path: str | None, errors_path: str | None, cache_path: str | None
) -> None:
    """Before any work: -o (or stdout) and --errors are writable and neither an input nor the cache."""
    from ..outputs import check_output_path, check_stdout

    if out_path:
        check_output_path(out_path, inputs, "-o", cache=cache_path)
        if errors_path and _same_file(out_path, errors_path):
            raise click.UsageError(f"-o and --errors name the same file ({out_path}): choose two files")
    else:
        if output == "parquet" and not _stdout_is_file():
            raise click.UsageError(
                "--output parquet needs a file: give -o FILE.parquet (Parquet cannot be "
                "written to a terminal or a pipe)"
            )
        check_stdout(inputs, cache=cache_path)
    if errors_path:
        check_output_path(errors_path, inputs, "--errors", cache=cache_path)


def _score_here(opts: dict[str, Any], inputs: list[str], keep: list[str], output: str, cache_path: str | None) -> None:
    """score in this process: one engine over every input, results as they are ready."""
    from ..engine import Engine
    from ..score import run_score

    model = load_model(opts, quiet=opts["quiet"])
    if output == "csv" and (clash := [k for k in keep if k in model.labels]):
        raise click.UsageError(
            f"--keep {clash[0]}: the CSV output already has a {clash[0]!r} column (a label of the model)"
        )
    if output == "parquet" and (clash := [k for k in keep if k in {f"score_{label}" for label in model.labels}]):
        raise click.UsageError(f"--keep {clash[0]}: the Parquet output already has a {clash[0]!r} column")
    outputs = Outputs(opts["out_path"], opts["errors_path"], inputs, cache_path)
    cache = None
    try:
        with outputs:
            if output == "parquet":
                from ..parquet import ParquetWriter, keep_types

                outputs.writer = ParquetWriter(
                    outputs.stream, outputs.what, model.labels, model.name, keep, keep_types(inputs, keep)
                )
            cache = open_cache(opts)
            if "-" in inputs and _stdin_is_terminal() and not opts["quiet"]:
                notice("reading texts from stdin, one per line; press Ctrl-D to end (or name a file to score)")
            summary = run_score(
                Engine(model, cache, max_chars=opts["max_chars"]),
                inputs,
                fmt=opts["fmt"],
                field_name=opts["field"],
                column=opts["column"],
                output=output,
                out=outputs.out,
                errors=outputs.errors,
                progress=opts["progress"],
                errors_name=opts["errors_path"],
                keep=keep,
                writer=outputs.writer,
            )
    finally:
        if cache:
            cache.close()
    finish(summary, opts["quiet"])


class Outputs:
    """score's -o and --errors files (opened after every check), closed when the work succeeded (a
    failed final write is one line) and dropped quietly when it did not."""

    def __init__(self, out_path: str | None, errors_path: str | None, inputs: list[str], cache_path: str | None):
        from ..outputs import open_output

        self.errors_path = errors_path
        self.out = open_output(out_path, inputs, "-o", cache=cache_path) if out_path else None
        self.errors = open_output(errors_path, inputs, "--errors", cache=cache_path) if errors_path else None
        self.what = f"results to {out_path}" if out_path else "results to stdout"
        self.stream = self.out or sys.stdout.buffer
        self.writer: Any = None  # a ParquetWriter over self.stream, when the output is Parquet

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        from ..outputs import close_output, flush_stdout

        try:
            if kind is None:
                if self.writer is not None:
                    self.writer.close()
                if self.out is not None:
                    close_output(self.out, self.what)
                else:
                    flush_stdout()
                if self.errors:
                    close_output(self.errors, f"--errors to {self.errors_path}")
        finally:
            if self.writer is not None:
                self.writer.abandon()
            for stream in (self.out, self.errors):
                if stream and not stream.closed:
                    try:
                        stream.close()
                    except OSError:
                        pass  # already failing: the first error is the one reported


def finish(summary: Any, quiet: bool) -> None:
    """The closing line on stderr, and exit 3 when some records were bad."""
    if not quiet:
        line(summary.line())
    if summary.errors:
        sys.exit(BAD_RECORDS)


def _is_input(value: str) -> bool:
    """A --ray value that names an input (a file, a directory, a .parquet name), not a cluster address."""
    return bool(value) and (os.path.exists(value) or value.lower().endswith((".parquet", ".parq")))


def output_format(given: str | None, out_path: str | None) -> str:
    """--output, else by the -o file's extension (.parquet/.parq → parquet, .csv → csv), else jsonl."""
    if given:
        return given
    suffix = os.path.splitext(out_path or "")[1].lower()
    return {".parquet": "parquet", ".parq": "parquet", ".csv": "csv"}.get(suffix, "jsonl")


def _keep_all(keep: list[str], inputs: list[str], fmt: str | None, column: str, output: str) -> list[str]:
    """--keep-all: every column of the (first) Parquet input; a JSON lines or CSV result already holds the text."""
    from ..io import detect_format
    from ..parquet import schema_of

    files = [n for n in inputs if detect_format(n, fmt) == "parquet" and n != "-"]
    if not files:
        raise click.UsageError("--keep-all needs a Parquet input (name the columns with --keep for other formats)")
    names = schema_of(files[0]).names
    return list(dict.fromkeys([*keep, *(n for n in names if output == "parquet" or n != column)]))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _stdout_is_file() -> bool:
    try:
        return sys.stdout is not None and stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _check_keep(keep: list[str], inputs: list[str], fmt: str | None, output: str = "jsonl") -> None:
    """--keep names columns or fields: refuse names a result already has, and inputs without columns."""
    from ..io import detect_format

    taken = ("label", "score", "model", "cache_hit", "error") if output == "parquet" else RESULT_KEYS
    for name in keep:
        if name in taken:
            raise click.UsageError(f"--keep {name}: a result already has a {name!r} key (choose another column)")
    if keep:
        plain = [n for n in inputs if detect_format(n, fmt) == "txt"]
        if plain:
            where = "stdin" if plain[0] == "-" else plain[0]
            raise click.UsageError(
                f"--keep needs columns or fields, and {where} is read as plain lines: "
                f"use a CSV, TSV, JSONL or JSON input (or --format)"
            )


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False
