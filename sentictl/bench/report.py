"""What a benchmark leaves behind: bench.json, a markdown table and a plot in --out.

The --out folder is checked before the (long) measurements and written after them; a write that
fails then keeps the measurements and reports one line.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT_FILES = ("bench.json", "bench.md", "bench.png")


def prepare_out_dir(out_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Before the (long) measurements: create --out, prove it writable, and refuse it if one of
    its files is an input (e.g. --texts bench-out/bench.md). Raises OutputError, one line."""
    from ..errors import OutputError
    from ..outputs import input_identities

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".sentictl-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write --out to {out_dir}: {exc.strerror or exc}") from None
    ids = input_identities([str(p) for p in inputs])
    for name in OUT_FILES:
        try:
            st = (out_dir / name).stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in ids:
            raise OutputError(
                f"--out {out_dir} would overwrite the input {ids[(st.st_dev, st.st_ino)]} "
                f"({name}): choose another --out directory"
            )


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    """Write bench.json, bench.md and bench.png; list them in report["files"].

    A file that cannot be written (full disk, directory gone) does not lose the measurements: the
    files already written stay, and report["out_error"] holds the one-line reason, which
    `sentictl bench` prints after the report before exiting 1.
    """
    written: list[str] = []
    target = out_dir / "bench.json"
    try:
        target.write_text(json.dumps(report, indent=2) + "\n")
        written.append(str(target))
        target = out_dir / "bench.md"
        target.write_text(format_markdown(report) + "\n")
        written.append(str(target))
        target = out_dir / "bench.png"
        try:
            plot(report, target)
            written.append(str(target))
        except ImportError:
            report["notes"].append("no plot: matplotlib is not installed")
    except OSError as exc:
        report["out_error"] = f"cannot write --out to {target}: {exc.strerror or exc}"
    report["files"] = written


def speedups(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput ratios against the pipeline's best batch size (the figure the issue tracks)."""
    pipe = [r for r in rows if r.get("contender") == "hf-pipeline" and r.get("texts_per_s")]
    if not pipe:
        return {}
    best = max(pipe, key=lambda r: r["texts_per_s"])
    out: dict[str, Any] = {
        "baseline": f"hf-pipeline batch {best['batch_size']}",
        "baseline_texts_per_s": best["texts_per_s"],
    }
    for r in rows:
        if r.get("texts_per_s") and r.get("contender") in ("onnxruntime", "score-process", "cache-hit"):
            r["vs_pipeline"] = r["texts_per_s"] / best["texts_per_s"]
    score = [r for r in rows if r.get("contender") == "score-process" and r.get("texts_per_s")]
    if score:
        top = max(score, key=lambda r: r["texts_per_s"])
        out["score_process"] = {
            "variant": top["variant"],
            "texts_per_s": top["texts_per_s"],
            "ratio": top["texts_per_s"] / best["texts_per_s"],
        }
    return out


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "":
        return "—"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_markdown(report: dict[str, Any]) -> str:
    """The results as a markdown table with a header saying what, where and how."""
    m = report["machine"]
    lines = [
        f"Model: {report['model']['name']} ({report['model']['dir']}); texts: {report['texts']['n']} from "
        f"{report['texts']['file']}; {report['repeats']} repeats after {report['warmup']} warm-up.",
        f"Machine: {m.get('cpu')}, {m.get('usable_cpus', m.get('logical_cpus'))} usable CPUs. "
        f"Thread budget: {report['thread_budget']}.",
        "",
        "| contender | variant | batch | texts/s | p50 ms | p99 ms | padding eff. | peak RSS MB | × pipeline |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['contender']} | {r.get('variant') or ''} | — | failed: {r['error'][:80]} | | | | | |")
            continue
        lines.append(
            f"| {r['contender']} | {r.get('variant') or ''} | {r.get('batch_size')} | {_fmt(r.get('texts_per_s'), ',.1f')} | "
            f"{_fmt(r.get('p50_ms'), ',.2f')} | {_fmt(r.get('p99_ms'), ',.2f')} | {_fmt(r.get('padding_efficiency'), '.0%')} | "
            f"{_fmt(r.get('peak_rss_mb'), ',.0f')} | {_fmt(r.get('vs_pipeline'), '.2f')} |"
        )
    sp = report.get("speedup") or {}
    if sp.get("score_process"):
        s = sp["score_process"]
        lines += [
            "",
            f"`sentictl score` (whole processes, {s['variant']}): {s['texts_per_s']:.1f} texts/s = "
            f"{s['ratio']:.2f}× {sp['baseline']} ({sp['baseline_texts_per_s']:.1f} texts/s).",
        ]
    lines += [
        "",
        "texts/s: texts ÷ median pass time; p50/p99: per call of `batch` texts (score-process: per "
        "process; cold-start: exec to exit). batch `budget`: all texts in one call, the engine sorts by "
        "length and packs batches under its token budget (what `score` does). padding eff.: real tokens ÷ "
        "padded tokens. Peak RSS: of the child process that ran the contender.",
    ]
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput vs batch size per contender, and latency percentiles, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "error" not in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["contender"] in ("onnxruntime", "hf-pipeline", "cache-hit", "tokenize") and isinstance(
            r.get("batch_size"), int
        ):
            series.setdefault(f"{r['contender']} {r.get('variant') or ''}".strip(), []).append(
                (r["batch_size"], r["texts_per_s"])
            )
    for name, points in series.items():
        points.sort()
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    for r in rows:
        if r["contender"] == "score-process" and r.get("texts_per_s"):
            left.axhline(r["texts_per_s"], linestyle="--", linewidth=1, color="grey")
            left.annotate(f"score process {r['variant']}", (1, r["texts_per_s"]), fontsize=7, va="bottom")
    left.set_xscale("log", base=2)
    left.set_xticks(report["batch_sizes"])
    left.set_xticklabels([str(b) for b in report["batch_sizes"]])
    left.set_yscale("log")
    left.set_xlabel("batch size (texts per call)")
    left.set_ylabel("texts/s")
    left.set_title(f"Throughput ({report['threads']} threads each)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)

    lat = [r for r in rows if r["contender"] in ("onnxruntime", "hf-pipeline") and r.get("p50_ms")]
    labels = [
        f"{r['contender'].replace('onnxruntime', 'ort')} {r.get('variant') or ''} b={r['batch_size']}" for r in lat
    ]
    xs = range(len(lat))
    right.bar([x - 0.2 for x in xs], [r["p50_ms"] for r in lat], width=0.4, label="p50")
    right.bar([x + 0.2 for x in xs], [r["p99_ms"] for r in lat], width=0.4, label="p99")
    right.set_xticks(list(xs))
    right.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    right.set_yscale("log")
    right.set_ylabel("ms per call")
    right.set_title("Latency per call")
    right.legend(fontsize=7)
    right.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(
        f"sentictl bench: {report['model']['name']}, {report['texts']['n']} texts, {report['date'][:10]}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
