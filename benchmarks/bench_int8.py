"""Issue 13: does a text's answer depend on its batch-mates, how close is int8 to fp32, at what CPU cost.

For each candidate (a model directory's variant, or an int8 recipe exported from a checkpoint):

(a) batch independence: the same texts scored through the engine (sentictl.engine.model.Model, the
    code every door runs) with run budgets of 256, 1024 and 8192 tokens and in a shuffled order;
    label flips and max |Δp| between the runs (goal: 0 flips, max |Δp| ≤ 1e-3);
(b) fidelity: label agreement with the fp32 variant of the same export on the texts (and on
    --eval's labelled CSV, with accuracy and its change vs fp32);
(c) CPU time: every candidate timed round-robin in one process, one ORT thread, CPU seconds of
    this process per text (wall time swings with other load on a shared machine; CPU time much
    less), as ratios against the per-tensor recipes measured in the same run.

    # a model directory as exported (every shipped variant), plus the bundled model
    .venv/bin/python benchmarks/bench_int8.py --model-dir benchmarks/_work/finbert-shaped --bundled
    # recipes exported from a checkpoint into benchmarks/_work/int8/<checkpoint>/<recipe>
    .venv/bin/python benchmarks/bench_int8.py --ckpt /work/artifacts/finsent-mini-ckpt \\
        --recipes tensor_all,tensor_l0,rowwise --eval /work/artifacts/finsent-mini-ckpt/heldout.csv
    # the same check through whole `sentictl score --no-cache --run-tokens B` processes
    .venv/bin/python benchmarks/bench_int8.py --model-dir sentictl/models/finsent-mini --cli --skip-time

Texts: headlines.txt then the tweets of tweets_train.csv (../shared/data), --n of them.
Results: a table on stdout, the figures in benchmarks/_work/bench_int8/<date>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = REPO.parent / "shared" / "data"
WORK = HERE / "_work"
BUDGETS = (256, 1024, 8192)
BASE_BUDGET = 1024

# Recipes an export can be asked for (sentictl.export.int8_config keyword arguments).
RECIPES: dict[str, dict[str, Any]] = {
    "tensor_all": {"recipe": "tensor", "fp32_layers": []},  # the all-int8 graph before issue 13
    "tensor_l0": {"recipe": "tensor", "fp32_layers": [0]},  # the default before issue 13
    "tensor_l0_gather": {"recipe": "tensor", "fp32_layers": [0], "quantize_ops": ["MatMul", "Gather"]},
    "rowwise": {"recipe": "rowwise"},  # the default now: smoothing 0.5, int8 embeddings
    "rowwise_matmul": {"recipe": "rowwise", "quantize_ops": ["MatMul"]},  # embeddings left fp32
    "rowwise_nosmooth": {"recipe": "rowwise", "smooth": 0.0},
    "rowwise_l0": {"recipe": "rowwise", "fp32_layers": [0]},
    "rowwise_portable": {"recipe": "rowwise", "isa": "avx2"},
}


def headlines() -> list[str]:
    return [t for t in (DATA / "headlines.txt").read_text(encoding="utf-8").splitlines() if t.strip()]


def texts(n: int) -> list[str]:
    heads = headlines()
    with open(DATA / "tweets_train.csv", newline="", encoding="utf-8") as fh:
        tweets = [r["text"] for r in csv.DictReader(fh)]
    return (heads + tweets)[:n]


def export_recipe(ckpt: Path, recipe: str) -> Path:
    """An export of ckpt (fp32 + int8 with the recipe), built once under benchmarks/_work/int8."""
    from sentictl.export import int8_config, run_export

    out = WORK / "int8" / ckpt.name / recipe
    if not (out / "manifest.json").is_file():
        print(f"exporting {ckpt} with {recipe} → {out}", file=sys.stderr)
        run_export(
            str(ckpt), out=out, variants="fp32,int8", force=True, quiet=True, int8=int8_config(**RECIPES[recipe])
        )
    return out


def model(mdir: Path, variant: str, budget: int = BASE_BUDGET, threads: int | None = 1) -> Any:
    from sentictl.engine.model import Model

    return Model(mdir, provider="cpu", variant=variant, threads=threads, run_tokens=budget)


def shipped_variants(mdir: Path) -> list[str]:
    manifest = json.loads((mdir / "manifest.json").read_text())
    return [
        name
        for name, v in manifest["variants"].items()
        if v.get("shipped", True) and v.get("provider", "cpu") == "cpu" and not v.get("static_shape")
    ]


# ----------------------------------------------------------------------------- (a)
def independence(mdir: Path, variant: str, sample: list[str], threads: int) -> dict[str, Any]:
    """Scores at every budget and shuffled; label flips and max |Δp| against the 1024-token run."""
    runs: dict[str, np.ndarray] = {}
    for budget in BUDGETS:
        runs[f"budget_{budget}"] = model(mdir, variant, budget, threads).predict_proba(sample)[0]
    order = list(range(len(sample)))
    random.Random(13).shuffle(order)
    shuffled = model(mdir, variant, BASE_BUDGET, threads).predict_proba([sample[i] for i in order])[0]
    back = np.empty_like(shuffled)
    back[order] = shuffled
    runs["shuffled"] = back
    return compare_runs(runs)


def compare_runs(runs: dict[str, np.ndarray]) -> dict[str, Any]:
    base = runs[f"budget_{BASE_BUDGET}"]
    out: dict[str, Any] = {"texts": len(base), "vs": f"budget_{BASE_BUDGET}", "runs": {}}
    flipped = np.zeros(len(base), dtype=bool)
    worst = 0.0
    for name, probs in runs.items():
        if probs is base:
            continue
        f = probs.argmax(1) != base.argmax(1)
        d = float(np.abs(probs - base).max())
        out["runs"][name] = {"label_flips": int(f.sum()), "max_abs_dp": d}
        flipped |= f
        worst = max(worst, d)
    out["texts_with_a_flip"] = int(flipped.sum())
    out["max_abs_dp"] = worst
    out["pass"] = bool(out["texts_with_a_flip"] == 0 and worst <= 1e-3)
    return out


def independence_cli(mdir: Path, variant: str, sample: list[str], tmp: Path) -> dict[str, Any]:
    """The same check through whole `sentictl score --no-cache --run-tokens B` processes."""
    src = tmp / "texts.txt"
    # One text per line: the sample's own newlines would split texts.
    lines = [" ".join(t.split()) for t in sample]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    order = list(range(len(lines)))
    random.Random(13).shuffle(order)
    (tmp / "shuffled.txt").write_text("\n".join(lines[i] for i in order) + "\n", encoding="utf-8")
    runs: dict[str, np.ndarray] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    jobs = [(f"budget_{b}", src, b) for b in BUDGETS] + [("shuffled", tmp / "shuffled.txt", BASE_BUDGET)]
    for name, path, budget in jobs:
        cmd = [
            sys.executable,
            "-m",
            "sentictl",
            "score",
            str(path),
            "--model-dir",
            str(mdir),
            "--variant",
            variant,
            "--no-cache",
            "--run-tokens",
            str(budget),
        ]
        done = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO, check=True)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        labels = sorted(rows[0]["scores"])
        probs = np.array([[r["scores"][k] for k in labels] for r in rows])
        if name == "shuffled":
            back = np.empty_like(probs)
            back[order] = probs
            probs = back
        runs[name] = probs
    result = compare_runs(runs)
    result["note"] = "scores as printed by `sentictl score` (rounded to 1e-6)"
    return result


# ----------------------------------------------------------------------------- (b)
def fidelity(
    mdir: Path, variant: str, sample: list[str], eval_csv: Path | None, threads: int, reference: dict[str, Any]
) -> dict[str, Any]:
    """Label agreement with fp32 (same export) on the texts and the labelled data; accuracy."""
    from sentictl.evaluate import metrics, read_labelled

    key = str(mdir)
    if key not in reference:
        ref = model(mdir, "fp32", threads=threads)
        entry: dict[str, Any] = {"sample": ref.predict_proba(sample)[0]}
        if eval_csv:
            tx, gold = read_labelled(eval_csv, ref.labels)
            entry.update(eval_texts=tx, gold=gold, eval=ref.predict_proba(tx)[0])
        reference[key] = entry
    ref = reference[key]
    m = model(mdir, variant, threads=threads)
    probs = m.predict_proba(sample)[0]
    same = probs.argmax(1) == ref["sample"].argmax(1)
    n_heads = min(len(sample), len(headlines()))
    out: dict[str, Any] = {
        "agreement_texts": float(same.mean()),
        "agreement_headlines": float(same[:n_heads].mean()),
        "n_headlines": n_heads,
        "max_abs_dp_vs_fp32": float(np.abs(probs - ref["sample"]).max()),
        "n_texts": len(sample),
    }
    if eval_csv:
        pred = m.predict_proba(ref["eval_texts"])[0].argmax(1)
        fp32_pred = ref["eval"].argmax(1)
        mine = metrics(ref["gold"], pred, m.labels, reference=fp32_pred)
        theirs = metrics(ref["gold"], fp32_pred, m.labels)
        out.update(
            agreement_eval=mine["agreement_vs_fp32"],
            accuracy=mine["accuracy"],
            fp32_accuracy=theirs["accuracy"],
            delta_points=100 * (mine["accuracy"] - theirs["accuracy"]),
            n_eval=len(ref["gold"]),
        )
    return out


# ----------------------------------------------------------------------------- (c)
def cpu_time(candidates: list[tuple[str, Path, str]], sample: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """CPU ms per text with one ORT thread, candidates interleaved round by round; best round counts."""
    models = {name: model(mdir, variant, threads=1) for name, mdir, variant in candidates}
    for m in models.values():
        m.predict_proba(sample[:32])  # warm-up: arenas, pre-packed weights
    cpu: dict[str, list[float]] = {k: [] for k in models}
    wall: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds):
        for name, m in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            m.predict_proba(sample)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {1e3 * v[-1] / len(sample):.1f}" for k, v in cpu.items())
            + " cpu-ms/text",
            file=sys.stderr,
        )
    return {
        k: {
            "cpu_ms_per_text": 1e3 * min(v) / len(sample),
            "cpu_ms_median": 1e3 * float(np.median(v)) / len(sample),
            "wall_ms_per_text": 1e3 * min(wall[k]) / len(sample),
            "rounds": rounds,
        }
        for k, v in cpu.items()
    }


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-dir", action="append", default=[], help="A model directory (repeatable): its shipped CPU variants."
    )
    parser.add_argument("--bundled", action="store_true", help="Also the bundled model (sentictl/models/finsent-mini).")
    parser.add_argument("--ckpt", default=None, help="A checkpoint to export once per --recipes.")
    parser.add_argument("--recipes", default="tensor_all,tensor_l0,rowwise", help=f"With --ckpt: {', '.join(RECIPES)}.")
    parser.add_argument("--eval", default=None, help="label,text CSV for accuracy and agreement (b).")
    parser.add_argument("--n", type=int, default=2000, help="Texts for (a) and (b).")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="ORT threads for (a) and (b)."
    )
    parser.add_argument("--time-n", type=int, default=300, help="Headlines per timing round (c).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument(
        "--cli", action="store_true", help="(a) through `sentictl score` processes instead of in-process."
    )
    parser.add_argument(
        "--out", default=None, help="JSON results file (default: benchmarks/_work/bench_int8/<date>.json)."
    )
    args = parser.parse_args()

    candidates: list[tuple[str, Path, str]] = []
    for d in args.model_dir:
        mdir = Path(d).resolve()
        candidates += [(f"{mdir.name}:{v}", mdir, v) for v in shipped_variants(mdir)]
    if args.bundled:
        from sentictl import config

        mdir = config.bundled_model_dir()
        candidates += [(f"bundled:{v}", mdir, v) for v in shipped_variants(mdir)]
    if args.ckpt:
        for i, recipe in enumerate(r for r in args.recipes.split(",") if r):
            mdir = export_recipe(Path(args.ckpt).resolve(), recipe)
            if i == 0:
                candidates.append((f"{Path(args.ckpt).name}:fp32", mdir, "fp32"))
            candidates.append((recipe, mdir, "int8"))
    if not candidates:
        parser.error("nothing to measure: give --model-dir, --bundled or --ckpt")
    sample = texts(args.n)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "argv": sys.argv[1:],
        "n": len(sample),
        "cpu": os.cpu_count(),
        "candidates": {},
    }
    reference: dict[str, Any] = {}
    for name, mdir, variant in candidates:
        print(f"{name}: batch independence on {len(sample)} texts", file=sys.stderr)
        entry: dict[str, Any] = {
            "model_dir": str(mdir.relative_to(REPO) if mdir.is_relative_to(REPO) else mdir.name),
            "variant": variant,
        }
        if args.cli:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                entry["independence"] = independence_cli(mdir, variant, sample, Path(tmp))
        else:
            entry["independence"] = independence(mdir, variant, sample, args.threads)
        if variant != "fp32" and not args.skip_fidelity:
            entry["fidelity"] = fidelity(
                mdir, variant, sample, Path(args.eval) if args.eval else None, args.threads, reference
            )
        report["candidates"][name] = entry
    if not args.skip_time:
        timed = cpu_time(candidates, texts(args.time_n), args.rounds)
        for name, t in timed.items():
            report["candidates"][name]["time"] = t
        for base in ("tensor_all", "tensor_l0"):
            if base in timed:
                for t in timed.values():
                    t[f"vs_{base}"] = t["cpu_ms_per_text"] / timed[base]["cpu_ms_per_text"]
    print(table(report))
    out = Path(args.out) if args.out else WORK / "bench_int8" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures: {out}", file=sys.stderr)


def table(report: dict[str, Any]) -> str:
    rows = [
        "| candidate | flips (a) | max abs Δp (a) | agree fp32, headlines | agree fp32, all texts | agree fp32, eval | "
        "acc Δ pts | cpu-ms/text | vs tensor_all | vs tensor_l0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in report["candidates"].items():
        ind, fid, t = e["independence"], e.get("fidelity", {}), e.get("time", {})

        def f(d: dict, k: str, fmt: str) -> str:
            return format(d[k], fmt) if k in d else "–"

        rows.append(
            f"| {name} | {ind['texts_with_a_flip']} | {ind['max_abs_dp']:.1e} | {f(fid, 'agreement_headlines', '.2%')} | "
            f"{f(fid, 'agreement_texts', '.2%')} | "
            f"{f(fid, 'agreement_eval', '.2%')} | {f(fid, 'delta_points', '+.2f')} | {f(t, 'cpu_ms_per_text', '.1f')} | "
            f"{f(t, 'vs_tensor_all', '.2f')} | {f(t, 'vs_tensor_l0', '.2f')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
