"""Regenerate benchmarks/RESULTS.md: machine, date, the `sentictl bench` table and plot, serve/bridge.

    .venv/bin/python benchmarks/run_all.py                 # FinBERT-shaped model, 400 headlines
    .venv/bin/python benchmarks/run_all.py --repeats 1 --batch-sizes 1,32   # quicker

Builds (or reuses) the FinBERT-shaped model with benchmarks/make_models.py, runs `sentictl bench`
on it into benchmarks/results/ (bench.json, bench.md, bench.png), and adds the serve and bridge
figures from benchmarks/results/serve.json and bridge.json when those exist (other scripts write
them). Takes several minutes: the transformers pipeline alone runs at ~20 texts/s.
"""

from __future__ import annotations

import argparse
import json
import os
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
    rows.sort(key=lambda kv: (0 if ("ratio" in kv[0] or "speedup" in kv[0] or kv[0].endswith("_x")) else 1))
    lines = [f"From `{path.relative_to(REPO)}`:", "", "| figure | value |", "|---|---:|"]
    for key, value in rows:
        shown = f"{value:,.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)


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
            model_dir, args.texts, variants=args.variants, batch_sizes=args.batch_sizes, threads=args.threads,
            baseline=args.baseline, out=RESULTS, repeats=args.repeats, warmup=1, limit=args.limit, cold_starts=3,
        )
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    sp = report.get("speedup", {}).get("score_process")
    headline = (
        f"**`sentictl score` ({sp['variant']}, whole processes on {report['texts']['n']} headlines): "
        f"{sp['texts_per_s']:.1f} texts/s = {sp['ratio']:.2f}× the transformers pipeline** "
        f"({report['speedup']['baseline']}, {report['speedup']['baseline_texts_per_s']:.1f} texts/s)."
        if sp else "_No pipeline baseline in this run._"
    )
    text = f"""# Benchmark results

Regenerate with `.venv/bin/python benchmarks/run_all.py` (see its --help). Raw data:
`results/bench.json`; the table alone: `results/bench.md`. Notes on what was tried: `NOTES.md`.

- Date: {report['date']}
- Machine: {m.get('cpu')}; {m.get('usable_cpus', m.get('logical_cpus'))} usable of {m.get('logical_cpus')} logical CPUs;
  {m.get('memory_gb', '?')} GB RAM; ISA: {', '.join(m.get('isa', [])) or 'n/a'}; {m.get('platform')}; Python {m.get('python')}
- Versions: {versions}
- Model: {report['model']['name']} ({report['model']['source'].get('id') if report['model'].get('source') else ''}),
  max length {report['model']['max_length']}. FinBERT-shaped = bert-base sizes, random weights,
  real uncased vocabulary: as fast as ProsusAI/finbert, meaningless labels (speed only).
- Texts: {report['texts']['n']} from `{Path(report['texts']['file']).name}`
- {report['thread_budget']}

{headline}

## `sentictl bench`

{format_markdown(report)}

![throughput and latency](results/bench.png)

## `sentictl serve`

{other_results('serve')}

## `sentictl bridge`

{other_results('bridge')}
"""
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
