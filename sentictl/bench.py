"""The benchmark harness behind `sentictl bench`.

Every contender runs in its own child process with the same thread budget, so that one cannot
warm caches, grab threads or inflate the peak memory of another: tokenization alone, ORT
inference per variant and batch size, the cache-hit path, whole `sentictl score` processes, the
cold start of a one-line `score`, and (when torch and transformers are importable) the Hugging
Face ``pipeline("text-classification")`` on the checkpoint the model was exported from.

Child processes get a job as JSON and write their result as JSON; the parent reads each child's
peak RSS from ``os.wait4``.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .errors import SentictlError

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
DEFAULT_LIMIT = 400
# The engine's own batching (length-sorted, token budget) over the whole text set, as `score` does.
BUDGET = "budget"


# ============================================================================ parent side
def default_texts() -> Path:
    """The shared headlines next to the checkout, else the package's parity sentences."""
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "headlines.txt"
    if shared.is_file():
        return shared
    return Path(__file__).resolve().parent / "data" / "parity.txt"


def read_texts(path: str | Path, limit: int | None) -> list[str]:
    """Non-blank lines of a text file (the first ``limit`` of them)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SentictlError(f"cannot read --texts {path}: {exc}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if limit:
        texts = texts[:limit]
    if not texts:
        raise SentictlError(f"--texts {path} has no non-blank lines")
    return texts


def parse_batch_sizes(spec: str | Sequence[int]) -> list[int]:
    """'1,8,32' → [1, 8, 32]."""
    if not isinstance(spec, str):
        return [int(b) for b in spec]
    try:
        sizes = [int(b) for b in spec.split(",") if b.strip()]
    except ValueError:
        raise SentictlError(f"--batch-sizes must be a comma list of integers, not {spec!r}") from None
    if not sizes or min(sizes) < 1:
        raise SentictlError(f"--batch-sizes must be positive integers, not {spec!r}")
    return sorted(set(sizes))


def pick_variants(manifest: dict[str, Any], spec: str | None, provider: str) -> list[str]:
    """auto: the variants built for the provider that will run them; all; or a comma list."""
    from .model import available_providers

    have = list(manifest["variants"])
    spec = (spec or "auto").strip().lower()
    if spec == "all":
        return have
    if spec == "auto":
        runnable = set(available_providers())
        target = provider if provider != "auto" else None
        chosen = [
            v for v, entry in manifest["variants"].items()
            if entry.get("usable", True)
            and (entry.get("provider", "cpu") == target if target else entry.get("provider", "cpu") in runnable)
        ]
        return chosen or ["fp32"]
    wanted = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in have]
    if unknown:
        raise SentictlError(f"this model has no variant {', '.join(unknown)} (it has: {', '.join(have)})")
    return wanted


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
        info["isa"] = sorted(f for f in flags if f.startswith(("avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "avx512f", "avx2")))
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
    env.update({
        "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "RAYON_NUM_THREADS": n,
        "TOKENIZERS_PARALLELISM": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
    })
    return env


def spawn(argv: Sequence[str], stdin_path: str | None, env: dict[str, str], timeout: float | None = None) -> dict[str, Any]:
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
            if time.perf_counter() > deadline:
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
        proc = spawn([sys.executable, "-c", "from sentictl.bench import worker; worker()"], str(job_path), env, timeout)
        if proc["rc"] != 0 or not result_path.is_file():
            lines = [line for line in proc["stderr"].strip().splitlines() if line.strip()]
            return {"error": (lines[-1] if lines else f"exit status {proc['rc']}")[:300], "peak_rss_mb": proc["peak_rss_mb"]}
        result = json.loads(result_path.read_text())
        result["peak_rss_mb"] = proc["peak_rss_mb"]
        return result


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # Nearest-rank: with few samples p99 is the worst one, which is the honest answer.
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[k]


def summarize(latencies: Sequence[float], pass_seconds: Sequence[float], n_texts: int) -> dict[str, Any]:
    """median/p99 per call (ms) and texts/s from the median pass."""
    median_pass = statistics.median(pass_seconds)
    return {
        "texts_per_s": n_texts / median_pass if median_pass > 0 else float("inf"),
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "calls": len(latencies),
        "passes": len(pass_seconds),
    }


class _Steps:
    def __init__(self, total: int, quiet: bool):
        self.total, self.n, self.quiet = total, 0, quiet

    def __call__(self, what: str) -> None:
        self.n += 1
        if not self.quiet:
            print(f"sentictl bench [{self.n}/{self.total}] {what}", file=sys.stderr, flush=True)


def resolve_checkpoint(manifest: dict[str, Any]) -> tuple[str | None, str]:
    """The checkpoint the model was exported from, for the pipeline baseline, or why there is none."""
    source = manifest.get("source") or {}
    ident = source.get("id")
    if not ident:
        return None, "the manifest names no source checkpoint"
    if source.get("kind") == "local" or Path(ident).is_dir():
        if (Path(ident) / "config.json").is_file():
            return ident, ""
        return None, f"the source checkpoint {ident} is not on this machine"
    return ident, ""


def run_bench(
    model_dir: str | Path | None = None,
    texts_path: str | Path | None = None,
    variants: str | None = "auto",
    batch_sizes: str | Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    baseline: str = "pipeline",
    out: str | Path | None = "bench-out",
    repeats: int = 3,
    warmup: int = 1,
    limit: int | None = DEFAULT_LIMIT,
    provider: str = "auto",
    long: str = "truncate",
    max_batch_tokens: int | None = None,
    cold_starts: int = 3,
    quiet: bool = False,
) -> dict[str, Any]:
    """Measure every contender with one thread budget; write bench.json/.md/.png to ``out``."""
    from . import config
    from .model import read_manifest

    resolved = config.resolve_model_dir(model_dir)
    manifest = read_manifest(resolved.path)
    model_path = str(resolved.path.resolve())
    texts_path = Path(texts_path) if texts_path else default_texts()
    texts = read_texts(texts_path, limit)
    sizes = parse_batch_sizes(batch_sizes)
    chosen = pick_variants(manifest, variants, provider)
    threads = int(threads or default_threads())
    repeats, warmup = max(1, int(repeats)), max(0, int(warmup))
    env = thread_env(threads)
    checkpoint, no_baseline = (None, "--baseline none") if baseline == "none" else resolve_checkpoint(manifest)
    if baseline != "none" and checkpoint:
        try:
            import importlib.util

            if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
                checkpoint, no_baseline = None, "torch/transformers are not installed (pip install 'sentictl[export]')"
        except ValueError:
            pass

    out_dir = Path(out) if out else None
    if out_dir:
        prepare_out_dir(out_dir, [texts_path])
    base_job = {
        "model_dir": model_path, "texts": texts, "batch_sizes": sizes, "threads": threads,
        "repeats": repeats, "warmup": warmup, "provider": provider, "long": long,
        "max_batch_tokens": max_batch_tokens or config.DEFAULT_MAX_BATCH_TOKENS,
    }
    default_variant = chosen[0] if len(chosen) == 1 else next(
        (v for v in config_preference(provider) if v in chosen), chosen[0]
    )
    steps = _Steps(2 + 2 * len(chosen) + 1 + (1 if checkpoint else 0), quiet)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    def add(contender: str, variant: str | None, result: dict[str, Any]) -> None:
        if "error" in result:
            notes.append(f"{contender} {variant or ''}: failed: {result['error']}".replace("  ", " "))
            rows.append({"contender": contender, "variant": variant, "batch_size": None, "error": result["error"]})
            return
        for row in result["rows"]:
            rows.append({"contender": contender, "variant": variant, **row, "peak_rss_mb": result["peak_rss_mb"]})
        notes.extend(result.get("notes", []))

    steps(f"tokenization alone ({len(texts)} texts, batch sizes {','.join(map(str, sizes))})")
    add("tokenize", None, run_job({**base_job, "kind": "tokenize"}, env))
    for v in chosen:
        steps(f"inference, {v} variant, batch sizes {','.join(map(str, sizes))} and {BUDGET}")
        add("onnxruntime", v, run_job({**base_job, "kind": "infer", "variant": v}, env))
    steps(f"cache-hit path ({default_variant})")
    add("cache-hit", default_variant, run_job({**base_job, "kind": "cache", "variant": default_variant}, env))
    for v in chosen:
        steps(f"end-to-end `sentictl score` processes, {v} variant ({repeats}×)")
        rows.append(_score_processes(model_path, v, texts, threads, repeats, env, provider, long, max_batch_tokens))
    steps(f"cold start: `sentictl score` of one line ({cold_starts}×)")
    rows.append(_cold_start(model_path, default_variant, threads, max(1, cold_starts), env, provider))
    if checkpoint:
        steps(f"baseline: transformers pipeline on {checkpoint}")
        add("hf-pipeline", "torch fp32", run_job({**base_job, "kind": "pipeline", "checkpoint": checkpoint,
                                                  "max_length": int(manifest["max_length"])}, env))
    elif baseline != "none":
        notes.append(f"baseline skipped: {no_baseline}")

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": threads,
        "thread_budget": f"{threads} threads for every contender (ORT intra-op, torch, tokenizers/rayon, OMP)",
        "model": {"dir": model_path, "name": manifest.get("name"), "source": manifest.get("source"),
                  "max_length": manifest["max_length"]},
        "texts": {"file": str(texts_path), "n": len(texts)},
        "variants": chosen,
        "batch_sizes": sizes,
        "repeats": repeats,
        "warmup": warmup,
        "rows": rows,
        "notes": notes,
    }
    report["speedup"] = speedups(rows)
    if out_dir:
        write_outputs(report, out_dir)
    return report


OUT_FILES = ("bench.json", "bench.md", "bench.png")


def prepare_out_dir(out_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Before the (long) measurements: create --out, prove it writable, and refuse it if one of
    its files is an input (e.g. --texts bench-out/bench.md). Raises OutputError, one line."""
    from .errors import OutputError
    from .io import input_identities

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
            raise OutputError(f"--out {out_dir} would overwrite the input {ids[(st.st_dev, st.st_ino)]} "
                              f"({name}): choose another --out directory")


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


def config_preference(provider: str) -> tuple[str, ...]:
    """The variant order the engine prefers for a provider (auto → cpu's)."""
    from .model import _PREFERRED_VARIANTS

    return _PREFERRED_VARIANTS.get(provider if provider != "auto" else "cpu", ("int8", "fp32"))


def _score_argv(model_dir: str, variant: str, threads: int, provider: str, long: str, max_batch_tokens: int | None) -> list[str]:
    argv = [sys.executable, "-m", "sentictl", "score", "--model-dir", model_dir, "--variant", variant,
            "--threads", str(threads), "--provider", provider, "--long", long, "--no-cache", "-q"]
    if max_batch_tokens:
        argv += ["--max-batch-tokens", str(max_batch_tokens)]
    return argv


def _score_processes(model_dir: str, variant: str, texts: list[str], threads: int, repeats: int,
                     env: dict[str, str], provider: str, long: str, max_batch_tokens: int | None) -> dict[str, Any]:
    """Whole `sentictl score` processes on the text set: start-up, model load, inference, output."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(texts) + "\n")
    try:
        runs = [spawn(_score_argv(model_dir, variant, threads, provider, long, max_batch_tokens), fh.name, env)
                for _ in range(repeats)]
    finally:
        os.unlink(fh.name)
    bad = [r for r in runs if r["rc"] != 0]
    if bad:
        return {"contender": "score-process", "variant": variant, "batch_size": None,
                "error": (bad[0]["stderr"].strip().splitlines() or ["?"])[-1][:300]}
    walls = [r["wall_s"] for r in runs]
    return {
        "contender": "score-process", "variant": variant, "batch_size": BUDGET,
        **summarize(walls, walls, len(texts)),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "note": f"whole process on {len(texts)} texts, wall clock incl. start-up",
    }


def _cold_start(model_dir: str, variant: str, threads: int, runs: int, env: dict[str, str], provider: str) -> dict[str, Any]:
    """Seconds from exec to exit for `sentictl score` of one line."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("Shares rose after the company raised its outlook.\n")
    try:
        results = [spawn(_score_argv(model_dir, variant, threads, provider, "truncate", None), fh.name, env) for _ in range(runs)]
    finally:
        os.unlink(fh.name)
    bad = [r for r in results if r["rc"] != 0]
    if bad:
        return {"contender": "cold-start", "variant": variant, "batch_size": None,
                "error": (bad[0]["stderr"].strip().splitlines() or ["?"])[-1][:300]}
    walls = [r["wall_s"] for r in results]
    return {
        "contender": "cold-start", "variant": variant, "batch_size": 1,
        "texts_per_s": None, "p50_ms": statistics.median(walls) * 1e3, "p99_ms": _percentile(walls, 99) * 1e3,
        "calls": runs, "passes": runs, "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "note": "one-line `sentictl score`, exec to exit",
    }


def speedups(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput ratios against the pipeline's best batch size (the figure the issue tracks)."""
    pipe = [r for r in rows if r.get("contender") == "hf-pipeline" and r.get("texts_per_s")]
    if not pipe:
        return {}
    best = max(pipe, key=lambda r: r["texts_per_s"])
    out: dict[str, Any] = {"baseline": f"hf-pipeline batch {best['batch_size']}",
                           "baseline_texts_per_s": best["texts_per_s"]}
    for r in rows:
        if r.get("texts_per_s") and r.get("contender") in ("onnxruntime", "score-process", "cache-hit"):
            r["vs_pipeline"] = r["texts_per_s"] / best["texts_per_s"]
    score = [r for r in rows if r.get("contender") == "score-process" and r.get("texts_per_s")]
    if score:
        top = max(score, key=lambda r: r["texts_per_s"])
        out["score_process"] = {"variant": top["variant"], "texts_per_s": top["texts_per_s"],
                                "ratio": top["texts_per_s"] / best["texts_per_s"]}
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
        lines += ["", f"`sentictl score` (whole processes, {s['variant']}): {s['texts_per_s']:.1f} texts/s = "
                      f"{s['ratio']:.2f}× {sp['baseline']} ({sp['baseline_texts_per_s']:.1f} texts/s)."]
    lines += ["", "texts/s: texts ÷ median pass time; p50/p99: per call of `batch` texts (score-process: per "
              "process; cold-start: exec to exit). batch `budget`: all texts in one call, the engine sorts by "
              "length and packs batches under its token budget (what `score` does). padding eff.: real tokens ÷ "
              "padded tokens. Peak RSS: of the child process that ran the contender."]
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
        if r["contender"] in ("onnxruntime", "hf-pipeline", "cache-hit", "tokenize") and isinstance(r.get("batch_size"), int):
            series.setdefault(f"{r['contender']} {r.get('variant') or ''}".strip(), []).append((r["batch_size"], r["texts_per_s"]))
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
    labels = [f"{r['contender'].replace('onnxruntime', 'ort')} {r.get('variant') or ''} b={r['batch_size']}" for r in lat]
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
    fig.suptitle(f"sentictl bench: {report['model']['name']}, {report['texts']['n']} texts, {report['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ============================================================================ child side
def worker() -> None:
    """Entry point of a measurement child: a JSON job on stdin, the result to job['result_path']."""
    job = json.loads(sys.stdin.read())
    kind = job["kind"]
    result = {"tokenize": _tokenize_job, "infer": _infer_job, "cache": _cache_job, "pipeline": _pipeline_job}[kind](job)
    Path(job["result_path"]).write_text(json.dumps(result))


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _measure(fn: Any, texts: list[str], size: int | str, repeats: int, warmup: int) -> dict[str, Any]:
    """Call fn on consecutive chunks of ``size`` texts (or all at once for BUDGET), timing each call."""
    calls = [texts] if size == BUDGET else _chunks(texts, int(size))
    for _ in range(warmup):
        # A few calls warm ORT's arena and the CPU caches; a full pass would only cost time.
        for chunk in calls[: max(1, min(len(calls), 4))]:
            fn(chunk)
    latencies: list[float] = []
    passes: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        for chunk in calls:
            t0 = time.perf_counter()
            fn(chunk)
            latencies.append(time.perf_counter() - t0)
        passes.append(time.perf_counter() - started)
    return summarize(latencies, passes, len(texts))


def _padding_engine(model: Any, texts: list[str], size: int | str) -> float:
    real = padded = 0
    for chunk in ([texts] if size == BUDGET else _chunks(texts, int(size))):
        items, _ = model._items(chunk)
        for batch in model._batches(items):
            lengths = [len(items[k].ids) + 2 for k in batch]
            real += sum(lengths)
            if model.static_shape:
                padded += int(model.static_shape[0]) * int(model.static_shape[1])
            else:
                padded += max(lengths) * len(lengths)
    return real / padded if padded else 1.0


def _tokenize_job(job: dict[str, Any]) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from .model import read_manifest

    manifest = read_manifest(Path(job["model_dir"]))
    tok = Tokenizer.from_file(str(Path(job["model_dir"]) / manifest["tokenizer"]["file"]))
    tok.no_padding()
    tok.no_truncation()
    texts = job["texts"]

    def encode(chunk: list[str]) -> None:
        tok.encode_batch(chunk, add_special_tokens=False)

    rows = [{"batch_size": b, **_measure(encode, texts, b, job["repeats"], job["warmup"])} for b in job["batch_sizes"]]
    lengths = [len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)]
    return {"rows": rows, "notes": [f"texts: mean {sum(lengths) / len(lengths):.1f} tokens, max {max(lengths)} (with [CLS]/[SEP])"]}


def _load(job: dict[str, Any]) -> Any:
    from .model import Model

    return Model(job["model_dir"], provider=job["provider"], variant=job["variant"], threads=job["threads"],
                 long=job["long"], max_batch_tokens=job["max_batch_tokens"])


def _infer_job(job: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = _load(job)
    load_s = time.perf_counter() - t0
    texts = job["texts"]
    rows = []
    for b in list(job["batch_sizes"]) + [BUDGET]:
        row = {"batch_size": b, **_measure(model.predict_proba, texts, b, job["repeats"], job["warmup"])}
        row["padding_efficiency"] = _padding_engine(model, texts, b)
        row["provider"] = model.provider
        rows.append(row)
    return {"rows": rows, "notes": [f"{model.variant} on {model.provider}: model load {load_s:.2f} s"]}


def _cache_job(job: dict[str, Any]) -> dict[str, Any]:
    from .cache import ResultCache
    from .pipeline import classify_cached

    model = _load(job)
    texts = job["texts"]
    cache = ResultCache(Path(job["tmp"]) / "cache.sqlite")
    try:
        classify_cached(model, cache, texts)  # fill: every later call is a hit

        def lookup(chunk: list[str]) -> None:
            classify_cached(model, cache, chunk)

        rows = [{"batch_size": b, **_measure(lookup, texts, b, job["repeats"], job["warmup"])} for b in job["batch_sizes"]]
        hits = cache.hits
    finally:
        cache.close()
    return {"rows": rows, "notes": [f"cache-hit path: {hits} hits served from SQLite without inference"]}


def _pipeline_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(int(job["threads"]))
    ckpt = job["checkpoint"]
    kwargs = {"local_files_only": True}
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt, **kwargs)
        hf_model = AutoModelForSequenceClassification.from_pretrained(ckpt, **kwargs)
    except Exception as exc:  # offline and not in the HF cache: skip with a note, not a failure
        return {"rows": [], "notes": [f"baseline skipped: cannot load {ckpt} offline ({type(exc).__name__})"]}
    pipe = pipeline("text-classification", model=hf_model, tokenizer=tokenizer, device=-1)
    load_s = time.perf_counter() - t0
    texts = job["texts"]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=job["max_length"])["input_ids"]]
    rows = []
    with torch.inference_mode():
        for b in job["batch_sizes"]:
            def run(chunk: list[str], b: int = b) -> None:
                pipe(chunk, batch_size=b, truncation=True, max_length=job["max_length"])

            row = {"batch_size": b, **_measure(run, texts, b, job["repeats"], job["warmup"])}
            # The pipeline pads each batch to its longest text, in input order.
            real = padded = 0
            for start in range(0, len(lengths), b):
                part = lengths[start : start + b]
                real += sum(part)
                padded += max(part) * len(part)
            row["padding_efficiency"] = real / padded
            rows.append(row)
    return {"rows": rows, "notes": [f"hf-pipeline: torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_s:.2f} s"]}
