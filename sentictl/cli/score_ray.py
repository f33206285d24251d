"""`sentictl score --ray`: score's checks and outputs around the Ray Data job (sentictl.ray.run)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import click

from .options import cache_location
from .score import Outputs, check_outputs, finish, output_format

if TYPE_CHECKING:
    from ..api import Classifier
    from ..ray import Job


def ray_output(given: str | None, out_path: str | None) -> str:
    """--ray's output: parquet (a directory of part files) for --output parquet, -o NAME.parquet, -o DIR/ or
    an existing directory; else JSON lines. CSV is refused."""
    if given == "csv" or (given is None and output_format(None, out_path) == "csv"):
        raise click.UsageError("--ray writes Parquet (a directory: -o DIR) or JSON lines, not CSV")
    if given is None and out_path and (out_path.endswith(("/", os.sep)) or os.path.isdir(out_path)):
        return "parquet"
    return output_format(given, out_path)


def score_ray(opts: dict[str, Any], inputs: list[str], keep: list[str], output: str, cache_path: str | None) -> None:
    """score --ray: the Ray Data job (sentictl.ray.run) between score's own checks and outputs."""
    import sentictl

    from .. import ray as sentictl_ray
    from ..score import ScoreSummary

    sentictl_ray.require_ray()
    out_path, errors_path = opts["out_path"], opts["errors_path"]
    _check_outputs(inputs, output, out_path, errors_path, cache_path)
    threads = opts["threads"] or 1
    started = time.perf_counter()
    clf = sentictl.load(
        opts["model_dir"],
        variant=opts["variant"],
        provider=opts["provider"],
        threads=threads,
        cache=cache_location(opts),
        long=opts["long_mode"],
        max_chars=opts["max_chars"],
    )
    try:
        if output == "parquet" and (clash := [k for k in keep if k in {f"score_{label}" for label in clf.labels}]):
            raise click.UsageError(f"--keep {clash[0]}: the Parquet output already has a {clash[0]!r} column")
        job = _job(opts, inputs, keep, threads, out_path if output == "parquet" else None)
        with Outputs(None if job.out_dir else out_path, errors_path, inputs, cache_path) as outputs:
            counts = _run(clf, job, outputs)
    finally:
        clf.close()
    seconds = time.perf_counter() - started
    summary = ScoreSummary(counts["texts"], counts["cache_hits"], counts["empty"], counts["errors"], seconds, inputs)
    finish(summary, opts["quiet"])


def _check_outputs(
    inputs: list[str], output: str, out_path: str | None, errors_path: str | None, cache_path: str | None
) -> None:
    """Before any work: a Parquet output is a directory to fill (-o), anything else as score checks it."""
    from ..outputs import check_output_path
    from ..raysinks import check_out_dir

    if output != "parquet":
        check_outputs(inputs, output, out_path, errors_path, cache_path)
        return
    if not out_path:
        raise click.UsageError("--ray writes Parquet as a directory of part files: give -o DIR (or -o NAME.parquet)")
    check_out_dir(out_path, inputs, cache_path)
    if errors_path:
        if os.path.realpath(os.path.dirname(os.path.abspath(errors_path))) == os.path.realpath(out_path):
            raise click.UsageError(f"--errors {errors_path} is inside -o {out_path}: choose a file outside it")
        check_output_path(errors_path, inputs, "--errors", cache=cache_path)


def _job(opts: dict[str, Any], inputs: list[str], keep: list[str], threads: int, out_dir: str | None) -> Job:
    """The job score's options describe (out_dir: the Parquet directory, None for JSON lines)."""
    from ..ray import Job
    from ..raysources import Source

    source = Source(inputs, opts["column"], opts["field"], opts["fmt"], keep, opts["max_chars"])
    return Job(
        source,
        address=opts["ray_address"] or None,
        workers=opts["workers"],
        threads=threads,
        preserve_order=opts["preserve_order"],
        progress=bool(opts["progress"]) and not opts["quiet"],
        out_dir=out_dir,
    )


def _run(clf: Classifier, job: Job, outputs: Outputs) -> dict[str, int]:
    """Run the job: JSON lines (when the output is not a directory) and --errors reports written here."""
    import orjson

    import sentictl

    from .. import ray as sentictl_ray
    from ..outputs import JsonlWriter, OutputStream, json_default

    def write_rows(table: Any) -> None:
        JsonlWriter(outputs.stream, outputs.what).write(table.to_pylist())

    def report(source: str | None, row: int | None, reason: str, message: str) -> None:
        if outputs.errors is not None:
            line = {"source": source, "line": row, "reason": reason, "error": message}
            OutputStream(outputs.errors, f"--errors to {outputs.errors_path}").write(
                orjson.dumps(line, default=json_default) + b"\n"
            )

    try:
        return sentictl_ray.run(clf, job, write_rows=write_rows, report=report)
    except sentictl.SentictlError:
        raise
    except Exception as exc:  # Ray wraps what an actor raised: say it in one line
        raise sentictl_ray.one_line(exc) from None
