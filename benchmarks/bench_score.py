"""Whole-process speed of `sentictl score` against the Hugging Face pipeline, and cold start.

    .venv/bin/python benchmarks/bench_score.py [--n 400] [--threads 2] [--repeats 3]

Both contenders run as fresh processes, as a user meets them, on the same FinBERT-shaped
checkpoint (benchmarks/make_models.py) and the same headlines, with the same thread budget:

- pipeline: a script that loads transformers' pipeline("text-classification") and classifies
  the N headlines at batch 32 (what the original demo did per message, batched);
- sentictl: `sentictl score --no-cache --threads T < N headlines` with the exported model;
- cold start: `echo x | sentictl score --no-cache` (load + one text), the median of repeats.

Each measurement alternates the contenders within one run, so machine noise hits both.
Writes benchmarks/results/score.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_models import CKPT, ensure  # noqa: E402

HEADLINES = HERE.parent.parent / "shared" / "data" / "headlines.txt"
PIPELINE_SCRIPT = """
import sys, time
import torch
torch.set_num_threads({threads})
from transformers import pipeline
clf = pipeline("text-classification", model={ckpt!r}, tokenizer={ckpt!r}, device="cpu")
texts = [l.rstrip("\\n") for l in open({texts!r}) if l.strip()]
out = clf(texts, batch_size=32, truncation=True)
assert len(out) == len(texts)
"""


def timed(cmd: list[str], stdin: bytes | None, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default=None, help="force a variant (default: the engine's auto choice)")
    parser.add_argument("--out", default=str(HERE / "results" / "score.json"))
    args = parser.parse_args()

    model_dir = ensure()
    texts = [line for line in HEADLINES.read_text().splitlines() if line.strip()][: args.n]
    data = ("\n".join(texts) + "\n").encode()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("SENTICTL_CACHE", None)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "texts.txt"
        text_file.write_bytes(data)
        script = Path(tmp) / "pipeline_baseline.py"
        script.write_text(PIPELINE_SCRIPT.format(threads=args.threads, ckpt=str(CKPT), texts=str(text_file)))
        sentictl = [sys.executable, "-m", "sentictl", "score", "--no-cache", "-q", "--model-dir", str(model_dir),
                    "--threads", str(args.threads)]
        if args.variant:
            sentictl += ["--variant", args.variant]
        pipe_times, score_times, cold_times = [], [], []
        # Warm the page cache for both so the first contender is not penalised for disk reads.
        timed(sentictl, b"warm up\n", env)
        for i in range(args.repeats):
            print(f"round {i + 1}/{args.repeats}", file=sys.stderr, flush=True)
            pipe_times.append(timed([sys.executable, str(script)], None, env))
            score_times.append(timed(sentictl, data, env))
            cold_times.append(timed(sentictl, b"x\n", env))

    pipe, score, cold = (statistics.median(t) for t in (pipe_times, score_times, cold_times))
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "model": "FinBERT-shaped (bert-base sizes, random weights, real uncased vocab)",
        "texts": len(texts),
        "threads": args.threads,
        "pipeline_wall_s": pipe_times,
        "sentictl_wall_s": score_times,
        "cold_start_wall_s": cold_times,
        "pipeline_median_s": pipe,
        "sentictl_median_s": score,
        "speedup": pipe / score,
        "cold_start_median_s": cold,
        "variant": args.variant or "auto",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {len(texts)} headlines, {args.threads} threads | wall (median of {args.repeats}) | texts/s |")
    print("|---|---|---|")
    print(f"| HF pipeline, batch 32 (whole process) | {pipe:.2f} s | {len(texts) / pipe:.1f} |")
    print(f"| sentictl score --no-cache (whole process) | {score:.2f} s | {len(texts) / score:.1f} |")
    print(f"| **speed-up** | **{pipe / score:.2f}x** | |")
    print(f"| cold start `echo x \\| sentictl score` | {cold:.2f} s | |")


if __name__ == "__main__":
    main()
