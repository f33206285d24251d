"""A model swap under load: `sentictl serve` reloads on SIGHUP while C clients keep sending requests.

    .venv/bin/python benchmarks/bench_reload.py                       # FinBERT-shaped int8, 8 clients
    .venv/bin/python benchmarks/bench_reload.py --model-dir DIR --other DIR2 --clients 8 --before 10 --after 10

The served folder is a copy of --model-dir in a temporary directory. C keep-alive clients send one
headline per request to /sentiment (--no-cache: every request is inferred) for --before seconds;
then, with --other, the folder is replaced the way `sentictl export --force` replaces it (a copy
of --other renamed into place) and the server gets SIGHUP (without --other it reloads the same
folder: the cost of loading and verifying beside the running model, then switching). The swap
ends when /metrics counts the reload; the clients go on for --after seconds.

Reported per phase (before / during the swap / after): requests answered and failed, latency
p50/p99/max, requests/s; the swap's duration; the server's resident memory (VmRSS sampled every
50 ms: before, peak during, after; and VmHWM). Every answer's x-model-fingerprint header is
checked: before the swap the old model's, after it the new one's, never a failed request.
Prints a markdown table and writes benchmarks/results/reload.json.

Latency on a shared machine is noisy; counts of failed requests and the fingerprints are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
RESULTS = HERE / "results" / "reload.json"
sys.path.insert(0, str(HERE))

from bench_serve import Serve, _get  # noqa: E402

_LENGTH = re.compile(rb"content-length: (\d+)", re.IGNORECASE)
_FINGERPRINT = re.compile(rb"x-model-fingerprint: (\w+)", re.IGNORECASE)


def _status(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / 1e6 for k in ("VmRSS", "VmHWM")}


def _metric(port: int, name: str) -> float:
    status, body = _get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return -1.0


async def _client(port: int, texts: list[bytes], offset: int, stop: asyncio.Event, log: list[tuple]) -> None:
    """One keep-alive connection: a headline per request until stopped; (start, end, status, fingerprint) each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = offset
    try:
        while not stop.is_set():
            body = texts[k % len(texts)]
            k += 1
            started = time.perf_counter()
            writer.write(
                b"POST /sentiment HTTP/1.1\r\nhost: bench\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(_LENGTH.search(head).group(1)))
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                log.append((started, time.perf_counter(), f"error {type(exc).__name__}", None))
                return
            fp = _FINGERPRINT.search(head)
            log.append((started, time.perf_counter(), head[9:12].decode(), fp.group(1).decode() if fp else None))
    finally:
        writer.close()


def _phase(rows: list[tuple], start: float, end: float) -> dict[str, Any]:
    """Requests that *finished* in [start, end): counts, latency percentiles (ms) and rate."""
    inside = [r for r in rows if start <= r[1] < end]
    lat = sorted((r[1] - r[0]) * 1000 for r in inside if r[2] == "200")

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {
        "answered": sum(1 for r in inside if r[2] == "200"),
        "failed": sum(1 for r in inside if r[2] != "200"),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else None,
        "seconds": round(end - start, 2),
        "rps": round(len(lat) / (end - start), 1) if end > start else None,
        "fingerprints": sorted({r[3] for r in inside if r[3]}),
    }


def run(
    model_dir: Path, other: Path | None, clients: int, before: float, after: float, threads: int, extra: list[str]
) -> dict[str, Any]:
    texts = [line.strip().encode() for line in HEADLINES.read_text(encoding="utf-8").splitlines() if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    served = work / "served"
    shutil.copytree(model_dir, served)
    if other is not None:
        shutil.copytree(other, work / "next")
    server = Serve(served, threads, ["--no-cache", "--variant", "int8", *extra])
    pid = server.proc.pid
    rows: list[tuple] = []
    rss: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss.append((time.perf_counter(), _status(pid)["VmRSS"]))
            except (OSError, AttributeError):
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    marks: dict[str, float] = {}

    async def drive() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_client(server.port, texts, i * 97, stop, rows)) for i in range(clients)]
        marks["start"] = time.perf_counter()
        await asyncio.sleep(before)
        if other is not None:  # what `sentictl export --force` does: the old folder aside, the new one renamed in
            served.rename(work / "old")
            (work / "next").rename(served)
        marks["sighup"] = time.perf_counter()
        server.proc.send_signal(signal.SIGHUP)
        while await asyncio.to_thread(_metric, server.port, "sentictl_reloads_total") < 1:
            if server.proc.poll() is not None:
                raise SystemExit("the server exited during the reload")
            await asyncio.sleep(0.05)
        marks["switched"] = time.perf_counter()
        await asyncio.sleep(after)
        stop.set()
        await asyncio.gather(*tasks)
        marks["end"] = time.perf_counter()

    try:
        asyncio.run(drive())
        hwm = _status(pid)["VmHWM"]
        failures = _metric(server.port, "sentictl_reload_failures_total")
    finally:
        done.set()
        code = server.stop()
        shutil.rmtree(work, ignore_errors=True)
    phases = {
        "before": _phase(rows, marks["start"], marks["sighup"]),
        "during": _phase(rows, marks["sighup"], marks["switched"]),
        "after": _phase(rows, marks["switched"], marks["end"] + 1),
    }

    def rss_in(a: float, b: float) -> float | None:
        values = [v for t, v in rss if a <= t < b]
        return round(max(values), 1) if values else None

    return {
        "phases": phases,
        "swap_seconds": round(marks["switched"] - marks["sighup"], 2),
        "failed_total": sum(1 for r in rows if r[2] != "200"),
        "reload_failures": failures,
        "rss_mb": {
            "before": rss_in(marks["start"], marks["sighup"]),
            "during_peak": rss_in(marks["sighup"], marks["switched"]),
            "after": rss_in(marks["end"] - 1.0, marks["end"] + 1),
            "vm_hwm": round(hwm, 1),
        },
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the FinBERT-shaped benchmark model")
    parser.add_argument(
        "--other", type=Path, default=None, help="the model folder to swap in (default: reload the same)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--serve-args", default="", help="extra `sentictl serve` arguments")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.model_dir is None:
        from make_models import ensure

        args.model_dir = ensure()
    result = run(
        args.model_dir, args.other, args.clients, args.before, args.after, args.threads, args.serve_args.split()
    )
    print(
        f"\nmodel swap under {args.clients} clients ({args.model_dir.name}"
        f"{' → ' + args.other.name if args.other else ', same folder'}): swap {result['swap_seconds']} s, "
        f"{result['failed_total']} failed requests, {result['reload_failures']:g} failed reloads\n"
    )
    print("| phase | answered | failed | p50 ms | p99 ms | max ms | req/s | model fingerprints |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, p in result["phases"].items():
        print(
            f"| {name} | {p['answered']} | {p['failed']} | {p['p50_ms']} | {p['p99_ms']} | {p['max_ms']} | "
            f"{p['rps']} | {', '.join(p['fingerprints'])} |"
        )
    r = result["rss_mb"]
    print(
        f"\nserver RSS (MB): before {r['before']}, peak during the swap {r['during_peak']}, after {r['after']}; "
        f"VmHWM {r['vm_hwm']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": args.model_dir.name,
                "other": args.other.name if args.other else None,
                "clients": args.clients,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                **result,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
