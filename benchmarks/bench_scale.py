"""Batch scoring beyond one process: `score --ray` against one `score`, and a 1 GB Parquet file's peak memory.

    .venv/bin/python benchmarks/bench_scale.py                       # 4,000 and 40,000 texts, 1 GB file
    .venv/bin/python benchmarks/bench_scale.py --sizes 4000 --gb 0.2 # quicker
    .venv/bin/python benchmarks/bench_scale.py --sizes "" --gb 1 --row-group-mb 32   # memory only, other row groups
    .venv/bin/python benchmarks/bench_scale.py --model-dir /tmp/r18/finbert-shaped   # FinBERT-sized int8

Every figure is a fresh `sentictl score --no-cache -q` process (wall clock, from outside):

1. Scaling: the same N texts (a Parquet file of varied headlines, all distinct) through
   `score --ray --workers 2 --threads 1` and through one `score --threads 2`. Start-up is measured
   on a 1-row file with the same command (a local Ray cluster started and stopped, actors loading
   the model; or one process loading it) and subtracted: efficiency = Ray's texts/s over the
   one-process texts/s, both without start-up. At 4,000 and 40,000 texts (--sizes), which also
   shows how the Ray door's start-up compares with its work.
2. Memory: a --gb GB Parquet file through one `score`, peak RSS from wait4 (goal < 500 MB). Most of
   its bytes are texts over --max-chars (150,000 random characters: read in full, never inferred, so
   the run takes minutes, not the days 1 GB of headlines takes on two cores); every 20th row is a
   headline that is scored. The file is written with --row-group-mb row groups (default 128, Spark's
   size) and no compression, as a 1 GB file on disk. pyarrow writes a page (and a dictionary page)
   per 1,024 rows, so with these rows a 128 MB row group is one page: Arrow holds it whole, twice
   while it decodes the dictionary, and that sets the peak.

The bundled model (finsent-mini) is the default: it makes the scaling and start-up shares visible
in minutes; for throughput figures that matter in production use --model-dir with the FinBERT-shaped
export (benchmarks/make_models.py). Prints a markdown table and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBJECTS = [
    "Profit",
    "Revenue",
    "Net income",
    "Operating margin",
    "Sales",
    "Free cash flow",
    "Guidance",
    "Dividend",
    "Order intake",
    "Loan losses",
]
VERBS = [
    "rose",
    "fell",
    "jumped",
    "slumped",
    "was flat",
    "beat expectations",
    "missed forecasts",
    "doubled",
    "narrowed",
    "widened",
]
WHEN = [
    "in the third quarter",
    "after the merger",
    "for the full year",
    "as demand weakened",
    "on cost cuts",
    "despite currency headwinds",
    "in Europe",
    "at the retail unit",
]


def headlines(n: int, seed: int = 0) -> list[str]:
    """n distinct, varied financial headlines (a serial number keeps them distinct: no de-dup, no cache)."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.randint(1, 60)}% {rng.choice(WHEN)} (#{i})." for i in range(n)
    ]


def write_texts(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), path, row_group_size=10_000
    )


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Run cmd; its wall seconds, peak RSS of the process itself (MB) and exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": code}


def score_cmd(model_dir: str | None, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentictl",
        "score",
        "--no-cache",
        "-q",
        *(["--model-dir", model_dir] if model_dir else []),
        *args,
    ]


def scaling(work: Path, sizes: list[int], model_dir: str | None, env: dict[str, str]) -> list[dict]:
    one_row = work / "one.parquet"
    write_texts(one_row, headlines(1, seed=99))
    one_cmd = ["--threads", "2"]
    ray_cmd = ["--workers", "2", "--threads", "1", "--ray"]
    start_one = timed(score_cmd(model_dir, str(one_row), "-o", str(work / "o.parquet"), *one_cmd), env)["seconds"]
    # --ray writes Parquet as a directory of part files (a former run's are replaced): never one-process's file.
    start_ray = timed(score_cmd(model_dir, str(one_row), "-o", str(work / "o-ray.parquet"), *ray_cmd), env)["seconds"]
    rows = []
    for n in sizes:
        data = work / f"texts-{n}.parquet"
        write_texts(data, headlines(n))
        one = timed(score_cmd(model_dir, str(data), "-o", str(work / "one-out.parquet"), *one_cmd), env)
        ray = timed(score_cmd(model_dir, str(data), "-o", str(work / "ray-out.parquet"), *ray_cmd), env)
        one_rate = n / max(one["seconds"] - start_one, 1e-9)
        ray_rate = n / max(ray["seconds"] - start_ray, 1e-9)
        rows.append(
            {
                "texts": n,
                "one_process_s": one["seconds"],
                "one_startup_s": start_one,
                "one_texts_per_s": round(one_rate, 1),
                "ray_s": ray["seconds"],
                "ray_startup_s": start_ray,
                "ray_texts_per_s": round(ray_rate, 1),
                "efficiency": round(ray_rate / one_rate, 3),
                "ray_startup_share": round(start_ray / ray["seconds"], 3),
                "ray_over_one_wall": round(ray["seconds"] / one["seconds"], 3),
            }
        )
        print(f"  {n:,} texts: one {one['seconds']} s, ray {ray['seconds']} s", file=sys.stderr)
    return rows


def big_file(path: Path, gb: float, group_mb: float = 128) -> dict:
    """A --gb GB Parquet file of ``group_mb`` MB row groups: 150,000-character texts (too long), every 20th row a
    headline."""
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    long_chars = 150_000
    rows = int(gb * (1 << 30) / long_chars * 20 / 19) + 1
    per_group = max(1, int(group_mb * (1 << 20)) // long_chars)
    scored = 0
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    rng = random.Random(1)
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, per_group):
            ids = list(range(start, min(rows, start + per_group)))
            texts = []
            for i in ids:
                if i % 20 == 0:
                    texts.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(WHEN)} (#{i}).")
                    scored += 1
                else:
                    texts.append(base64.b64encode(os.urandom(long_chars * 3 // 4)).decode())
            writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema), row_group_size=per_group)
    return {"rows": rows, "headlines": scored, "bytes": path.stat().st_size, "row_group_mb": group_mb}


def big_file_apart(path: Path, gb: float, group_mb: float) -> dict:
    """big_file in a process of its own. Writing 1 GB leaves this process's peak RSS at ~700 MB, and on
    Linux a child's ru_maxrss starts from the peak of the process it was started from (exec keeps the
    larger of the two), so `score` would be measured at this process's peak instead of its own."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(big_file, (path, gb, group_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4000,40000", help="texts per scaling run, comma-separated")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the big Parquet file (0: skip)")
    parser.add_argument("--row-group-mb", type=float, default=128, help="row group size of the big Parquet file")
    parser.add_argument("--model-dir", default=None, help="default: the bundled model")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTICTL_", "RAY_ADDRESS"))}
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "model": args.model_dir or "bundled finsent-mini",
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        if sizes:
            report["scaling"] = scaling(work, sizes, args.model_dir, env)
        if args.gb > 0:
            big = work / "big.parquet"
            report["big_file"] = big_file_apart(big, args.gb, args.row_group_mb)
            run = timed(
                score_cmd(
                    args.model_dir, str(big), "--threads", "2", "--keep", "id", "-o", str(work / "big-out.parquet")
                ),
                env,
            )
            report["big_file"].update(run, command=" ".join(["benchmarks/bench_scale.py", *sys.argv[1:]]))
            print(
                f"  {report['big_file']['bytes'] / (1 << 30):.2f} GB file: {run['seconds']} s, "
                f"peak RSS {run['peak_rss_mb']} MB",
                file=sys.stderr,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['machine']}; model: {report['model']}\n")
    if "scaling" in report:
        print(
            "| texts | one `score --threads 2` | start-up | texts/s | `--ray --workers 2 --threads 1` | start-up | "
            "texts/s | efficiency | Ray start-up share |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in report["scaling"]:
            print(
                f"| {r['texts']:,} | {r['one_process_s']} s | {r['one_startup_s']} s | {r['one_texts_per_s']} | "
                f"{r['ray_s']} s | {r['ray_startup_s']} s | {r['ray_texts_per_s']} | {r['efficiency']} | "
                f"{r['ray_startup_share']:.0%} |"
            )
    if "big_file" in report:
        b = report["big_file"]
        print(
            f"\n{b['bytes'] / (1 << 30):.2f} GB Parquet ({b['rows']:,} rows in {b['row_group_mb']:g} MB row groups, "
            f"{b['headlines']:,} scored): "
            f"{b['seconds']} s, peak RSS {b['peak_rss_mb']} MB (goal < 500 MB)"
        )


if __name__ == "__main__":
    main()
