"""`sentictl bench` and `sentictl eval`: click only at import time (score imports this module)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..console import notice
from ..exitcodes import CHECK_FAILED
from .options import CONTEXT, model_options, opt


@click.command("bench", context_settings=CONTEXT)
@model_options
@opt(
    "--texts",
    "texts_path",
    env="BENCH_TEXTS",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="One text per line. Default: 50 financial sentences that ship with sentictl (pass your own for real figures).",
)
@opt("--limit", env="BENCH_LIMIT", type=click.IntRange(min=1), default=400, help="Use the first N texts.")
@opt(
    "--variants",
    env="BENCH_VARIANTS",
    default=None,
    help="auto (the variants built for the provider), all, or a comma list such as fp32,int8, among the "
    "variants whose file the model ships (`sentictl info` lists them; naming another exits 1). "
    "Default: --variant if given, else auto.",
)
@opt(
    "--batch-sizes",
    env="BENCH_BATCH_SIZES",
    default="1,8,32,64",
    help="Texts per call; every inference contender also runs 'budget' (all texts in one call, length-sorted).",
)
@opt(
    "--baseline",
    env="BENCH_BASELINE",
    type=click.Choice(["pipeline", "none"]),
    default="pipeline",
    help="pipeline: the transformers text-classification pipeline on the source checkpoint (needs the export extra).",
)
@opt(
    "--repeats",
    env="BENCH_REPEATS",
    type=click.IntRange(min=1),
    default=3,
    help="Timed passes over the texts per measurement.",
)
@opt(
    "--warmup",
    env="BENCH_WARMUP",
    type=click.IntRange(min=0),
    default=1,
    help="Untimed warm-up rounds before each measurement.",
)
@opt(
    "--cold-starts",
    env="BENCH_COLD_STARTS",
    type=click.IntRange(min=1),
    default=3,
    help="How many one-line `sentictl score` processes to time for the cold start.",
)
@opt(
    "--out",
    env="BENCH_OUT",
    type=click.Path(file_okay=False),
    default="bench-out",
    help="Directory for bench.json, bench.md and bench.png.",
)
@opt("--json", "as_json", env="JSON", is_flag=True, help="Print bench.json instead of the table.")
@opt("-q", "--quiet", env="QUIET", is_flag=True, help="No progress on stderr.")
def bench_command(**opts: Any) -> None:
    """Measure throughput and latency of every variant against the transformers pipeline.

    Each contender runs in its own process with the same thread budget (--threads, default: all
    usable CPUs): tokenization alone, ONNX Runtime inference per variant and batch size, the
    cache-hit path, whole `sentictl score` processes, the cold start of a one-line `score`, and
    the Hugging Face pipeline on the checkpoint named in the manifest. Reports median and p99
    latency, texts/s, padding efficiency and peak RSS; writes bench.json, bench.md and bench.png.

    \b
    Exit status: 0 done; 1 the run could not start or finish (model, texts, output); 2 usage error;
    130 interrupted.

    \b
    Examples:
      sentictl bench --model-dir models/finbert --texts headlines.txt --out bench-out
      sentictl bench --variants all --batch-sizes 1,32 --threads 2 --baseline none
    """
    import orjson

    from ..bench import default_texts, format_markdown, run_bench
    from ..errors import OutputError
    from ..outputs import check_stdout, writing_stdout

    check_stdout([opts["texts_path"] or default_texts()])  # `bench --texts t.txt >> t.txt`
    variants = opts["variants"] or opts["variant"] or "auto"
    report = run_bench(
        model_dir=opts["model_dir"],
        texts_path=opts["texts_path"],
        variants=variants,
        batch_sizes=opts["batch_sizes"],
        threads=opts["threads"],
        baseline=opts["baseline"],
        out=opts["out"],
        repeats=opts["repeats"],
        warmup=opts["warmup"],
        limit=opts["limit"],
        provider=opts["provider"],
        long=opts["long_mode"],
        run_tokens=opts["run_tokens"],
        cold_starts=opts["cold_starts"],
        quiet=opts["quiet"],
    )
    with writing_stdout("the report"):
        if opts["as_json"]:
            click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
        else:
            click.echo(format_markdown(report))
    if not opts["quiet"] and report.get("files"):
        notice(f"wrote {', '.join(report['files'])}")
    if report.get("out_error"):
        raise OutputError(report["out_error"])  # the report is on stdout; the files that were written stay


@click.command("eval", context_settings=CONTEXT)
@model_options
@opt(
    "--data",
    env="EVAL_DATA",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="Labelled CSV with a text column and a label column (label names as in the model, any case).",
)
@opt("--text-column", env="EVAL_TEXT_COLUMN", default="text", help="CSV column holding the text.")
@opt("--label-column", env="EVAL_LABEL_COLUMN", default="label", help="CSV column holding the gold label.")
@opt(
    "--variants",
    env="EVAL_VARIANTS",
    default="all",
    help="all (every variant whose file the model ships and this machine can run) or a comma list such as "
    "fp32,int8 (named ones run on cpu if need be).",
)
@opt(
    "--min-accuracy",
    env="EVAL_MIN_ACCURACY",
    type=click.FloatRange(0, 1),
    default=None,
    help="Exit 4 if any evaluated variant's accuracy (0–1) is below this, or if a variant named in "
    "--variants could not be evaluated.",
)
@opt(
    "--max-drop",
    env="EVAL_MAX_DROP",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit 4 if any variant is more than this many accuracy points below fp32, or if fp32 could not "
    "run (a model that ships without its fp32 file, like the bundled one, cannot pass this gate).",
)
@opt("--json", "as_json", env="JSON", is_flag=True, help="Print the report as JSON instead of tables.")
@opt("-q", "--quiet", env="QUIET", is_flag=True, help="No progress on stderr.")
def eval_command(**opts: Any) -> None:
    """Accuracy, macro-F1, per-class precision/recall, confusion and agreement with fp32, per variant.

    Labels in the data are matched by name (ignoring case) to the model's labels; unknown ones are
    an error that lists them. fp32 runs too whenever the model ships its file: it is the reference
    for agreement and --max-drop. A model that ships without it (the bundled finsent-mini keeps only
    fp32's export figures) reports fp32 as skipped, and a --max-drop gate on it exits 4, unchecked.

    \b
    Exit status: 0 every requested gate was checked and passed; 1 the run could not start (model,
    data, output); 2 usage error; 4 a gate (--min-accuracy, --max-drop) was missed or could not be
    checked; 130 interrupted.

    \b
    Examples:
      sentictl eval --data labelled.csv
      sentictl eval --model-dir models/finbert --data tweets.csv --variants fp32,int8 --max-drop 0.5 --min-accuracy 0.85
      sentictl eval --data news.csv --text-column headline --label-column sentiment --json
    """
    import orjson

    from ..evaluate import check_gates, format_report, run_eval, unchecked_gates
    from ..outputs import check_stdout, writing_stdout

    check_stdout([opts["data"]])  # `eval --data d.csv >> d.csv` would append the report to the data
    variants = opts["variant"] if opts["variant"] and opts["variants"] == "all" else opts["variants"]
    report = run_eval(
        opts["model_dir"],
        opts["data"],
        variants=variants,
        text_column=opts["text_column"],
        label_column=opts["label_column"],
        provider=opts["provider"],
        threads=opts["threads"],
        long=opts["long_mode"],
        run_tokens=opts["run_tokens"],
        quiet=opts["quiet"],
    )
    failures = check_gates(report, opts["min_accuracy"], opts["max_drop"])
    unchecked = unchecked_gates(report, opts["min_accuracy"], opts["max_drop"])
    report["gates"] = {
        "min_accuracy": opts["min_accuracy"],
        "max_drop": opts["max_drop"],
        "failures": failures,
        "unchecked": unchecked,
        "passed": not failures and not unchecked,
    }
    with writing_stdout("the report"):
        if opts["as_json"]:
            click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        else:
            click.echo(format_report(report))
    for failure in failures:
        notice(f"gate missed: {failure}")
    for reason in unchecked:
        notice(f"gate not checked: {reason}")
    if failures or unchecked:
        sys.exit(CHECK_FAILED)
