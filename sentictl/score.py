"""`sentictl score`: read texts from files or stdin, classify them in batches, write results."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from .console import progress_bar
from .engine import BadRecord, Engine, Record, Verdict
from .errors import InputError, OutputError
from .io import detect_format, open_input, read_source
from .outputs import CsvWriter, JsonlWriter, OutputStream

# Records per engine call: big enough for full batches and one cache round-trip,
# small enough that output starts flowing early on a long stream.
CHUNK = 512


@dataclass
class ScoreSummary:
    """What a score run did, for the closing line on stderr and the exit code."""

    texts: int = 0
    cache_hits: int = 0
    empty: int = 0
    errors: int = 0
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.texts / self.seconds if self.seconds > 0 else 0.0
        parts = [_count(self.texts, "text") + " scored", _count(self.cache_hits, "cache hit")]
        if self.empty:
            parts.append(f"{self.empty} empty skipped")
        if self.errors:
            parts.append(_count(self.errors, "bad record"))
        return f"sentictl: {', '.join(parts)} in {self.seconds:.2f} s ({rate:,.0f} texts/s)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_score(
    engine: Engine,
    inputs: Sequence[str],
    *,
    fmt: str | None = None,
    field_name: str = "text",
    column: str = "text",
    output: str = "jsonl",
    out: IO[bytes] | None = None,
    errors: IO[bytes] | None = None,
    progress: bool | None = None,
    errors_name: str | None = None,
    keep: Sequence[str] = (),
    writer: Any = None,
) -> ScoreSummary:
    """Classify every record of every input, writing results as they are ready.

    A write that fails (full disk, I/O error) raises OutputError naming the output, e.g.
    "cannot write results to stdout: No space left on device"; what was written stays written.
    An input that fails mid-read (EIO) raises InputError: what was scored before stays written.
    ``errors_name``: the --errors path, for that message. ``keep``: input columns or fields
    (dots reach nested JSON fields) copied into each result, before its own keys (None when absent).
    ``writer``: one that takes every row (``all_rows``, the Parquet writer): bad records become rows
    with their reason code, in input order, and are reported only to ``errors`` (when given).
    """
    if out is None and sys.stdout is None:  # started with `>&-`
        raise OutputError("cannot write results to stdout: Bad file descriptor (stdout is closed)")
    out = out or sys.stdout.buffer
    keep = list(keep)
    if writer is None:
        writer = CsvWriter(out, keep=keep) if output == "csv" else JsonlWriter(out)  # names stdout "results to stdout"
    all_rows = bool(getattr(writer, "all_rows", False))
    run = _Run(engine, writer, _report_target(errors, errors_name, all_rows), ScoreSummary(sources=list(inputs)), keep)
    started = time.perf_counter()
    for name in inputs or ["-"]:
        stream = open_input(name)
        try:
            bar = progress_bar(name, stream, progress)
            read = functools.partial(
                read_source, stream, name, detect_format(name, fmt), field_name, column, engine.max_chars, keep=keep
            )
            (_score_rows if all_rows else _score_records)(run, read_guarded(name, read), _Progress(bar, stream))
            if bar is not None:
                bar.close()
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    run.summary.seconds = time.perf_counter() - started
    return run.summary


@dataclass
class _Run:
    """What one score run writes to: results, bad-record reports (None: only as rows) and its counts."""

    engine: Engine
    writer: Any  # JsonlWriter or CsvWriter (write), or the Parquet writer (write_rows)
    report_to: OutputStream | None
    summary: ScoreSummary
    keep: list[str]


@dataclass
class _Progress:
    """An input's progress bar (None when there is none) and the stream whose position it shows."""

    bar: Any
    stream: IO[bytes]

    def update(self) -> None:
        if self.bar is not None:
            try:
                self.bar.update(self.stream.tell() - self.bar.n)
            except (OSError, ValueError):
                pass


def _report_target(errors: IO[bytes] | None, errors_name: str | None, all_rows: bool) -> OutputStream | None:
    """Where bad records are reported: --errors, else stderr; nowhere when every row is written (all_rows)
    and no --errors was given."""
    if errors is not None:
        return OutputStream(errors, f"--errors to {errors_name or getattr(errors, 'name', 'its file')}")
    return None if all_rows else OutputStream(sys.stderr.buffer, "bad-record reports to stderr")


def _score_records(run: _Run, verdicts: Iterator[Verdict], progress: _Progress) -> None:
    """Score the records in chunks; a bad one is reported (blank lines only counted) and left out."""
    pending: list[Record] = []
    for rec in verdicts:
        if isinstance(rec, Record):
            pending.append(rec)
            if len(pending) >= CHUNK:
                _flush(run, pending, progress)
                pending = []
        elif rec.reason == "empty":
            # Blank lines are part of ordinary text files: counted, not reported one by one.
            run.summary.empty += 1
        else:
            _report(run.report_to, rec)
            run.summary.errors += 1
    _flush(run, pending, progress)


def _score_rows(run: _Run, verdicts: Iterator[Verdict], progress: _Progress) -> None:
    """Every verdict becomes a row, in chunks (for a writer that takes all rows)."""
    pending: list[Verdict] = []
    for rec in verdicts:
        pending.append(rec)
        if len(pending) >= CHUNK:
            _flush_rows(run, pending, progress)
            pending = []
    _flush_rows(run, pending, progress)


def read_guarded(name: str, read: Callable[[], Iterator[Verdict]]) -> Iterator[Verdict]:
    """The records ``read`` gives, with an input that fails mid-read (EIO, a vanished network file) as one
    InputError line instead of a traceback."""
    try:
        yield from read()
    except OSError as exc:
        raise InputError(f"cannot read {'stdin' if name == '-' else name}: {exc.strerror or exc}") from None


def kept_values(data: Any, keep: Sequence[str]) -> dict[str, Any]:
    """The --keep columns or fields of a record's row or JSON object (a dotted name reaches nested fields)."""
    out: dict[str, Any] = {}
    for name in keep:
        value = None
        if isinstance(data, dict):
            if name in data:
                value = data[name]
            else:
                value = data
                for part in name.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
        out[name] = value
    return out


def _flush(run: _Run, pending: list[Record], progress: _Progress) -> None:
    if not pending:
        return
    outcomes = run.engine.classify_each([r.text for r in pending])
    results: list[Mapping[str, Any]] = []
    for rec, outcome in zip(pending, outcomes):
        if isinstance(outcome, BadRecord):
            _report(run.report_to, BadRecord(outcome.reason, outcome.message, rec.source, rec.position))
            run.summary.errors += 1
        elif run.keep:
            # A new dict: the engine may hand one result object to several equal texts.
            results.append({**kept_values(rec.data, run.keep), **outcome})
        else:
            results.append(outcome)
    run.writer.write(results)
    run.summary.texts += len(results)
    run.summary.cache_hits += sum(1 for r in results if r["cache_hit"])
    progress.update()


def _flush_rows(run: _Run, pending: Sequence[Verdict], progress: _Progress) -> None:
    """Every verdict becomes a row (scored, or with its reason code): one output row per input record."""
    if not pending:
        return
    summary = run.summary
    records = [v for v in pending if isinstance(v, Record)]
    scored = iter(run.engine.classify_each([r.text for r in records]))
    outcomes: list[Any] = []
    kept: dict[str, list[Any]] = {name: [] for name in run.keep}
    for verdict in pending:
        outcome = next(scored) if isinstance(verdict, Record) else verdict
        if isinstance(outcome, BadRecord):
            outcome = BadRecord(outcome.reason, outcome.message, verdict.source, verdict.position)
            if outcome.reason == "empty":
                summary.empty += 1
            else:
                summary.errors += 1
                _report(run.report_to, outcome)
        else:
            summary.texts += 1
            summary.cache_hits += bool(outcome["cache_hit"])
        for name, value in kept_values(getattr(verdict, "data", None), run.keep).items():
            kept[name].append(value)
        outcomes.append(outcome)
    run.writer.write_rows(kept, outcomes)
    progress.update()


def _report(errors: OutputStream | None, rec: BadRecord) -> None:
    if errors is not None:  # None: bad records are rows of the output, and no --errors was given
        errors.write(orjson.dumps(rec.as_dict()) + b"\n")
