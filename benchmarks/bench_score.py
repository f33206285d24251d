"""Whole-process speed of `sentictl score` against the transformers pipeline, as a user meets them.

    .venv/bin/python benchmarks/bench_score.py                          # 400 headlines, 5 rounds
    .venv/bin/python benchmarks/bench_score.py --baseline-model-dir DIR  # + the ratio to another export
    .venv/bin/python benchmarks/bench_score.py --repeats 3 --n 200       # quicker

Every contender is a fresh process, timed from its start to its exit (interpreter start-up,
imports, model load, reading the file, inference and writing all included: what a user waits
for), on the same file of headlines and the same FinBERT-shaped checkpoint
(benchmarks/make_models.py), with the same thread budget:

- pipeline: `python pipeline.py FILE`: imports transformers, builds
  pipeline("text-classification") on the checkpoint and classifies every line at batch 32
  (torch.set_num_threads(T));
- sentictl: `sentictl score FILE --no-cache --threads T` on the exported model (its default
  variant unless --variant);
- baseline (with --baseline-model-dir): the same command on another export, e.g. a copy of the
  model made with the previous default recipe, so the new default's gain is measured in the
  same run;
- cold start: `echo x | sentictl score --no-cache` (load + one text), for sentictl and baseline.

Each contender runs once untimed first (page cache, Python bytecode), then the contenders
alternate for --repeats rounds, in reversed order every other round, so a neighbour's load or
a drift hits all of them alike. The headline is the median over rounds of pipeline ÷ sentictl
(each round's pair ran back to back); medians of the times and the load average are reported
too. Each process also reports how much of its time was start-up, so a figure that times only
inference can be told apart from this one. Prints markdown; writes benchmarks/results/score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from make_models import CKPT, ensure  # noqa: E402

HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
RESULTS = HERE / "results" / "score.json"

# The pipeline contender. It prints when its imports and its model load were done (seconds since
# the process started, from the kernel's start time of the process) so start-up can be separated.
PIPELINE_SCRIPT = r"""
import os, sys, time
threads = int(sys.argv[3])
import torch
if threads > 0:
    torch.set_num_threads(threads)
from transformers import pipeline
t_import = time.time() - float(os.environ["BENCH_LAUNCHED"])  # interpreter start-up and imports
t0 = time.perf_counter()
clf = pipeline("text-classification", model=sys.argv[1], tokenizer=sys.argv[1], device="cpu")
t_load = time.perf_counter() - t0
texts = [l.rstrip("\n") for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
out = clf(texts, batch_size=int(os.environ.get("PIPELINE_BATCH", "32")), truncation=True)
t_done = time.perf_counter() - t0 - t_load
assert len(out) == len(texts)
with open(os.devnull, "w") as sink:
    for o in out:
        print(o, file=sink)
print(f"pipeline-times import={t_import:.3f} load={t_load:.3f} infer={t_done:.3f} "
      f"torch_threads={torch.get_num_threads()}", file=sys.stderr)
"""

_SCORED = re.compile(r" in ([\d.]+) s \(")
_PIPE = re.compile(r"pipeline-times import=([\d.]+) load=([\d.]+) infer=([\d.]+)")


def cpu_description() -> str:
    """CPU model and the instruction sets that decide int8 and fp32 speed."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} CPUs, {', '.join(isa) or 'no AVX flags seen'}"


def run(cmd: list[str], env: dict[str, str], stdin: bytes | None = None) -> tuple[float, str]:
    """Wall seconds from start to exit, and stderr; raises SystemExit on failure."""
    env = {**env, "BENCH_LAUNCHED": repr(time.time())}
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        input=stdin,
        stdout=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    return took, proc.stderr.decode(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="headlines (from ../shared/data/headlines.txt)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for every contender (ORT intra-op, torch, OMP); default: all CPUs",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every contender once)")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the FinBERT-shaped export")
    parser.add_argument("--variant", default=None, help="force a variant (default: the engine's choice)")
    parser.add_argument(
        "--baseline-model-dir",
        type=Path,
        default=None,
        help="another export to time in the same run (e.g. today's default recipe)",
    )
    parser.add_argument("--baseline-variant", default=None)
    parser.add_argument("--checkpoint", type=Path, default=CKPT, help="the pipeline's checkpoint")
    parser.add_argument("--pipeline-batch", type=int, default=32)
    parser.add_argument(
        "--also-pipelines",
        default="",
        help="more pipeline contenders in the same run, comma list of BATCH[:torch-default], "
        "e.g. '8,32:torch-default' (torch-default: no torch.set_num_threads and no "
        "OMP_NUM_THREADS), to see what the batch size or the thread setting changes",
    )
    parser.add_argument("--no-warmup", action="store_true", help="time the first run of each contender too")
    parser.add_argument("--cold-repeats", type=int, default=None, help="cold-start runs (default: --repeats)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    model_dir = args.model_dir or ensure()
    texts = [line for line in HEADLINES.read_text(encoding="utf-8").splitlines() if line.strip()][: args.n]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    # What a user's shell has: no TOKENIZERS_PARALLELISM (the old script set it false, which made
    # sentictl tokenize on one thread), no OMP_NUM_THREADS unless the pipeline's budget asks for it.
    env.update(HF_HUB_OFFLINE="1")
    env.pop("OMP_NUM_THREADS", None)

    def pipe_env(batch: int, equal: bool) -> dict[str, str]:
        out = {**env, "PIPELINE_BATCH": str(batch)}
        if equal:
            out["OMP_NUM_THREADS"] = str(args.threads)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "headlines.txt"
        text_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
        script = Path(tmp) / "pipeline.py"
        script.write_text(PIPELINE_SCRIPT)

        def score_cmd(directory: Path, variant: str | None, source: str) -> list[str]:
            cmd = [
                sys.executable,
                "-m",
                "sentictl",
                "score",
                *([source] if source != "-" else []),
                "--no-cache",
                "--no-progress",
                "--model-dir",
                str(directory),
                "--threads",
                str(args.threads),
            ]
            return cmd + (["--variant", variant] if variant else [])

        def pipe_cmd(equal: bool) -> list[str]:
            return [
                sys.executable,
                str(script),
                str(args.checkpoint),
                str(text_file),
                str(args.threads if equal else 0),
            ]

        contenders = {
            "pipeline": (pipe_cmd(True), pipe_env(args.pipeline_batch, True), None),
            "sentictl": (score_cmd(model_dir, args.variant, str(text_file)), env, None),
        }
        for spec in filter(None, (x.strip() for x in args.also_pipelines.split(","))):
            batch, _, how = spec.partition(":")
            equal = how != "torch-default"
            contenders[f"pipeline-b{batch}{'' if equal else '-torch-default'}"] = (
                pipe_cmd(equal),
                pipe_env(int(batch), equal),
                None,
            )
        cold = {"sentictl": score_cmd(model_dir, args.variant, "-")}
        if args.baseline_model_dir:
            contenders["baseline"] = (
                score_cmd(args.baseline_model_dir, args.baseline_variant, str(text_file)),
                env,
                None,
            )
            cold["baseline"] = score_cmd(args.baseline_model_dir, args.baseline_variant, "-")

        if not args.no_warmup:
            print("warm-up: every contender once, untimed ...", file=sys.stderr, flush=True)
            for cmd, e, stdin in contenders.values():
                run(cmd, e, stdin)
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        inner: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        loads: list[float] = []
        names = list(contenders)
        for r in range(args.repeats):
            order = names if r % 2 == 0 else names[::-1]
            loads.append(os.getloadavg()[0])
            print(
                f"round {r + 1}/{args.repeats}: {', '.join(order)} (load average {loads[-1]:.1f})",
                file=sys.stderr,
                flush=True,
            )
            for name in order:
                cmd, e, stdin = contenders[name]
                wall, err = run(cmd, e, stdin)
                walls[name].append(wall)
                if name.startswith("pipeline") and (m := _PIPE.search(err)):
                    inner[name].append(
                        {"startup_s": float(m.group(1)) + float(m.group(2)), "work_s": float(m.group(3))}
                    )
                elif m := _SCORED.search(err):
                    inner[name].append({"startup_s": wall - float(m.group(1)), "work_s": float(m.group(1))})
        cold_walls: dict[str, list[float]] = {name: [] for name in cold}
        for r in range(args.cold_repeats or args.repeats):
            for name, cmd in cold.items() if r % 2 == 0 else list(cold.items())[::-1]:
                cold_walls[name].append(run(cmd, env, b"x\n")[0])

    med = {name: statistics.median(w) for name, w in walls.items()}
    paired = [p / s for p, s in zip(walls["pipeline"], walls["sentictl"])]
    ratio = statistics.median(paired)
    vs_baseline = None
    if "baseline" in walls:
        vs_baseline = statistics.median(b / s for b, s in zip(walls["baseline"], walls["sentictl"]))
    cold_med = {name: statistics.median(w) for name, w in cold_walls.items()}

    def split(name: str) -> tuple[float, float] | None:
        rows = inner.get(name) or []
        if not rows:
            return None
        return statistics.median(r["startup_s"] for r in rows), statistics.median(r["work_s"] for r in rows)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": cpu_description(),
        "python": platform.python_version(),
        "model": "FinBERT-shaped (bert-base sizes, random weights, real uncased vocabulary)",
        "model_dir": model_dir.name,
        "variant": args.variant or "default",
        "baseline_model_dir": args.baseline_model_dir.name if args.baseline_model_dir else None,
        "texts": len(texts),
        "threads": args.threads,
        "pipeline_batch": args.pipeline_batch,
        "extra_pipelines": args.also_pipelines or None,
        "speedup_vs_extra_pipelines": {
            name: statistics.median(p / s for p, s in zip(walls[name], walls["sentictl"]))
            for name in walls
            if name.startswith("pipeline-")
        },
        "warmup": not args.no_warmup,
        "repeats": args.repeats,
        "load_average_per_round": loads,
        "wall_s": walls,
        "median_wall_s": med,
        "startup_and_work_s": {name: split(name) for name in contenders},
        "speedup_vs_pipeline": ratio,
        "speedup_vs_pipeline_per_round": paired,
        "ratio_of_medians": med["pipeline"] / med["sentictl"],
        "speedup_vs_baseline": vs_baseline,
        "cold_start_median_s": cold_med,
        "cold_start_s": cold_walls,
    }
    n = len(texts)
    md = [
        f"**`sentictl score` = {ratio:.2f}× the transformers pipeline** (fp32, batch {args.pipeline_batch}), "
        f"whole processes on {n} headlines, {args.threads} threads each; median of {args.repeats} paired rounds "
        f"(per round {min(paired):.2f}–{max(paired):.2f}×)."
        + (f" Against the baseline export from the same run: **{vs_baseline:.2f}×**." if vs_baseline else ""),
        "",
        f"Machine: {result['machine']}; load average {min(loads):.1f}–{max(loads):.1f} during the rounds. "
        f"Start-up = interpreter, imports and model load (pipeline: until the pipeline is built; sentictl: "
        f"the whole process less the scoring time it reports).",
        "",
        "| contender (whole process) | median wall | texts/s | start-up + work (median) |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "pipeline": f"transformers pipeline, batch {args.pipeline_batch}",
        "sentictl": f"`sentictl score` ({model_dir.name}{', ' + args.variant if args.variant else ''})",
        "baseline": f"`sentictl score` baseline ({args.baseline_model_dir.name if args.baseline_model_dir else ''})",
    }
    for name in contenders:
        s = split(name)
        parts = f"{s[0]:.2f} s + {s[1]:.2f} s" if s else ""
        label = (
            labels.get(name) or f"transformers {name} (sentictl = {result['speedup_vs_extra_pipelines'][name]:.2f}× it)"
        )
        md.append(f"| {label} | {med[name]:.2f} s | {n / med[name]:.1f} | {parts} |")
    for name, value in cold_med.items():
        md.append(
            f"| cold start `echo x \\| sentictl score` ({labels[name].split('(')[-1].rstrip(')')}) | {value:.2f} s | | |"
        )
    result["markdown"] = "\n".join(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown"])
    print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
