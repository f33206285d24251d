"""Regenerate benchmarks/RESULTS.md: one headline figure, then every table, without machine paths.

    .venv/bin/python benchmarks/run_all.py                 # FinBERT-shaped model, 400 headlines
    .venv/bin/python benchmarks/run_all.py --repeats 1 --batch-sizes 1,32 --score-repeats 3   # quicker
    .venv/bin/python benchmarks/run_all.py --skip-bench --skip-score   # rebuild the page from results/*.json

The headline is benchmarks/bench_score.py's figure: `sentictl score` against the transformers
pipeline (fp32, batch 32), whole processes timed from start to exit, interleaved, median of
paired rounds (run here unless --skip-score; --baseline-model-dir adds the ratio against another
export from the same run). Then the `sentictl bench` table and plot (per-variant throughput and
latency in one process; its "× pipeline" column compares with the pipeline's best batch size
measured in-process, a different and more conservative figure than the headline), and the
serve, bridge, memory and GPU sections from benchmarks/results/{serve,bridge,memory}.json and
gpu_check.md when those exist (their own scripts write them). Absolute paths of this machine
are written relative to the repository. Takes several minutes: the pipeline runs at ~20 texts/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def _scalars(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten the numbers and short strings of a results JSON for a two-column table."""
    out: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _scalars(value, f"{prefix}{key}.")
    elif isinstance(data, (int, float, str, bool)) and not (isinstance(data, str) and len(data) > 120):
        out.append((prefix.rstrip("."), data))
    return out


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _gpu_section() -> str:
    path = RESULTS / "gpu_check.md"
    if path.is_file():
        return path.read_text().strip()
    return (
        "_Not run yet: no GPU machine has run `bash benchmarks/gpu_check.sh`; copy its gpu_check.md to "
        "benchmarks/results/ when one has. CoreML has never run: it needs macOS._"
    )


def other_results(name: str) -> str:
    """The section for serve.json / bridge.json: its ratios first, then every other figure."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return f"_No {name} results yet ({path.relative_to(REPO)} is written by the {name} benchmark)._"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"_{path.relative_to(REPO)} is unreadable: {exc}_"
    if isinstance(data, dict) and isinstance(data.get("markdown"), str):
        return data["markdown"]
    rows = _scalars(data)
    rows.sort(key=lambda kv: 0 if ("ratio" in kv[0] or "speedup" in kv[0] or kv[0].endswith("_x")) else 1)
    lines = [f"From `{path.relative_to(REPO)}`:", "", "| figure | value |", "|---|---:|"]
    for key, value in rows:
        shown = f"{value:,.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)


def relative_paths(text: str) -> str:
    """Write this machine's absolute paths relative to the repository (RESULTS.md is committed)."""
    roots = [(REPO, "."), (REPO.parent, ".."), (Path.home(), "~")]
    work = HERE / "_work"
    if work.is_symlink():  # the scratch folder may live on another disk: its real path is this machine's too
        roots.insert(0, (work.resolve(), "benchmarks/_work"))
    for root, shown in roots:
        text = text.replace(str(root) + "/", "" if shown == "." else shown + "/").replace(str(root), shown)
    return text


def _sanitize_file(path: Path) -> None:
    if path.is_file():
        path.write_text(relative_paths(path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="Default: the FinBERT-shaped model (built if missing).")
    parser.add_argument("--texts", default=str(HEADLINES))
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--variants", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--baseline", default="pipeline", choices=["pipeline", "none"])
    parser.add_argument("--skip-bench", action="store_true", help="Rebuild RESULTS.md from the existing bench.json.")
    parser.add_argument(
        "--skip-score", action="store_true", help="Use the existing results/score.json for the headline."
    )
    parser.add_argument("--score-repeats", type=int, default=5, help="bench_score.py rounds (default 5)")
    parser.add_argument(
        "--baseline-model-dir",
        default=None,
        help="bench_score.py: another export to compare with in the same run (e.g. the previous default)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sentictl.bench import format_markdown, run_bench

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.skip_bench:
        report = json.loads((RESULTS / "bench.json").read_text())
    else:
        model_dir = args.model_dir
        if model_dir is None:
            from make_models import ensure

            model_dir = str(ensure())
        report = run_bench(
            model_dir,
            args.texts,
            variants=args.variants,
            batch_sizes=args.batch_sizes,
            threads=args.threads,
            baseline=args.baseline,
            out=RESULTS,
            repeats=args.repeats,
            warmup=1,
            limit=args.limit,
            cold_starts=3,
        )
    for name in ("bench.json", "bench.md"):
        _sanitize_file(RESULTS / name)
    if not args.skip_score:
        cmd = [
            sys.executable,
            str(HERE / "bench_score.py"),
            "--n",
            str(args.limit),
            "--repeats",
            str(args.score_repeats),
        ]
        if args.model_dir:
            cmd += ["--model-dir", args.model_dir]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.baseline_model_dir:
            cmd += ["--baseline-model-dir", args.baseline_model_dir]
        subprocess.run(cmd, check=True)
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    score = _load(RESULTS / "score.json")
    if score and score.get("speedup_vs_pipeline"):
        headline = (
            f"**`sentictl score` = {score['speedup_vs_pipeline']:.2f}× the transformers pipeline** "
            f"(fp32, batch {score.get('pipeline_batch', 32)}; whole processes on {score['texts']} headlines, "
            f"{score['threads']} threads each, median of {score['repeats']} interleaved rounds, "
            f"{score['date']}; `benchmarks/bench_score.py`)."
        )
        if score.get("speedup_vs_baseline"):
            headline += (
                f" Against `{score['baseline_model_dir']}` in the same run: {score['speedup_vs_baseline']:.2f}×."
            )
    else:
        headline = "_No whole-process figure yet: run `benchmarks/bench_score.py` (writes results/score.json)._"
    text = f"""# Benchmark results

Regenerate with `.venv/bin/python benchmarks/run_all.py` (see its --help). Raw data:
`results/bench.json`; the table alone: `results/bench.md`. Notes on what was tried: `NOTES.md`.

- Date: {report["date"]}
- Machine: {m.get("cpu")}; {m.get("usable_cpus", m.get("logical_cpus"))} usable of {m.get("logical_cpus")} logical CPUs;
  {m.get("memory_gb", "?")} GB RAM; ISA: {", ".join(m.get("isa", [])) or "n/a"}; {m.get("platform")}; Python {m.get("python")}
- Versions: {versions}
- Model: {report["model"]["name"]} ({report["model"]["source"].get("id") if report["model"].get("source") else ""}),
  max length {report["model"]["max_length"]}. FinBERT-shaped = bert-base sizes, random weights,
  real uncased vocabulary: as fast as ProsusAI/finbert, meaningless labels (speed only).
- Texts: {report["texts"]["n"]} from `{Path(report["texts"]["file"]).name}`
- {report["thread_budget"]}

{headline}

## `sentictl score` against the transformers pipeline (whole processes)

{other_results("score")}

## `sentictl bench` (one process per contender; × pipeline = against its best batch size, in-process)

{format_markdown(report)}

![throughput and latency](results/bench.png)

## `sentictl serve`

{other_results("serve")}

## `sentictl bridge`

{other_results("bridge")}

## Memory: `sentictl serve` peak RSS (`benchmarks/bench_memory.py`)

{other_results("memory")}

## GPU (`benchmarks/gpu_check.sh`)

{_gpu_section()}
"""
    (HERE / "RESULTS.md").write_text(relative_paths(text))
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
