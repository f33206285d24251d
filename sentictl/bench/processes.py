"""The parent side of a benchmark: the machine, the thread budget and the child processes.

Every contender runs in a fresh interpreter with the same environment; the parent reads each
child's peak RSS from ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exitcodes import OK
from .stats import BUDGET, percentile, summarize


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["isa"] = sorted(
            f for f in flags if f.startswith(("avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "avx512f", "avx2"))
        )
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gb"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    from importlib import metadata

    versions = {}
    for dist in ("sentictl", "onnxruntime", "onnxruntime-gpu", "tokenizers", "torch", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    info["versions"] = versions
    return info


def default_threads() -> int:
    """The CPUs this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """A child environment pinned to the thread budget, without the user's SENTICTL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    n = str(threads)
    env.update(
        {
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "RAYON_NUM_THREADS": n,
            "TOKENIZERS_PARALLELISM": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def spawn(
    argv: Sequence[str], stdin_path: str | None, env: dict[str, str], timeout: float | None = None
) -> dict[str, Any]:
    """Run a child to completion: exit code, wall seconds, peak RSS (MB) and its stderr tail."""
    with tempfile.TemporaryFile() as err, open(stdin_path or os.devnull, "rb") as stdin:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = None if timeout is None else started + timeout
        while True:
            # wait4 (not Popen.wait) because it returns the child's own rusage, hence its peak RSS.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
    # ru_maxrss is kilobytes on Linux, bytes on macOS.
    rss = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss_mb": round(rss, 1), "stderr": tail}


def run_job(job: dict[str, Any], env: dict[str, str], timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement job in a fresh interpreter; its result plus peak RSS."""
    with tempfile.TemporaryDirectory(prefix="sentictl-bench-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = {**job, "result_path": str(result_path), "tmp": tmp}
        job_path.write_text(json.dumps(job))
        proc = spawn(
            [sys.executable, "-c", "from sentictl.bench.jobs import worker; worker()"], str(job_path), env, timeout
        )
        if proc["rc"] != OK or not result_path.is_file():
            lines = [line for line in proc["stderr"].strip().splitlines() if line.strip()]
            return {
                "error": (lines[-1] if lines else f"exit status {proc['rc']}")[:300],
                "peak_rss_mb": proc["peak_rss_mb"],
            }
        result: dict[str, Any] = json.loads(result_path.read_text())
        result["peak_rss_mb"] = proc["peak_rss_mb"]
        return result


def _score_argv(
    model_dir: str, variant: str, threads: int, provider: str, long: str, run_tokens: int | None
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "sentictl",
        "score",
        "--model-dir",
        model_dir,
        "--variant",
        variant,
        "--threads",
        str(threads),
        "--provider",
        provider,
        "--long",
        long,
        "--no-cache",
        "-q",
    ]
    if run_tokens:
        argv += ["--run-tokens", str(run_tokens)]
    return argv


def score_processes(
    model_dir: str,
    variant: str,
    texts: list[str],
    threads: int,
    repeats: int,
    env: dict[str, str],
    provider: str,
    long: str,
    run_tokens: int | None,
) -> dict[str, Any]:
    """Whole `sentictl score` processes on the text set: start-up, model load, inference, output."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(texts) + "\n")
    try:
        runs = [
            spawn(_score_argv(model_dir, variant, threads, provider, long, run_tokens), fh.name, env)
            for _ in range(repeats)
        ]
    finally:
        os.unlink(fh.name)
    bad = [r for r in runs if r["rc"] != OK]
    if bad:
        return {
            "contender": "score-process",
            "variant": variant,
            "batch_size": None,
            "error": (bad[0]["stderr"].strip().splitlines() or ["?"])[-1][:300],
        }
    walls = [r["wall_s"] for r in runs]
    return {
        "contender": "score-process",
        "variant": variant,
        "batch_size": BUDGET,
        **summarize(walls, walls, len(texts)),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "note": f"whole process on {len(texts)} texts, wall clock incl. start-up",
    }


def cold_start(
    model_dir: str, variant: str, threads: int, runs: int, env: dict[str, str], provider: str
) -> dict[str, Any]:
    """Seconds from exec to exit for `sentictl score` of one line."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("Shares rose after the company raised its outlook.\n")
    try:
        results = [
            spawn(_score_argv(model_dir, variant, threads, provider, "truncate", None), fh.name, env)
            for _ in range(runs)
        ]
    finally:
        os.unlink(fh.name)
    bad = [r for r in results if r["rc"] != OK]
    if bad:
        return {
            "contender": "cold-start",
            "variant": variant,
            "batch_size": None,
            "error": (bad[0]["stderr"].strip().splitlines() or ["?"])[-1][:300],
        }
    walls = [r["wall_s"] for r in results]
    return {
        "contender": "cold-start",
        "variant": variant,
        "batch_size": 1,
        "texts_per_s": None,
        "p50_ms": statistics.median(walls) * 1e3,
        "p99_ms": percentile(walls, 99) * 1e3,
        "calls": runs,
        "passes": runs,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "note": "one-line `sentictl score`, exec to exit",
    }
