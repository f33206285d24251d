"""Benchmark `sentictl serve` against offline `sentictl score` on the same model and machine.

    python benchmarks/bench_serve.py                 # FinBERT-shaped model, 1,000 headlines
    python benchmarks/bench_serve.py --n 2000 --threads 2

Three phases, each with the same --threads:
  1. offline: `sentictl score --no-cache` over N headlines in a subprocess. Its rate is taken from
     the summary line `score` prints, which times scoring only (reading + inference + writing),
     not interpreter start-up or model loading; the whole-process rate is recorded too.
  2. server, misses: `sentictl serve --no-cache`, 32 concurrent keep-alive clients, one headline
     per request, every headline once → requests/s and the ratio to (1). Target ≥ 0.9.
  Phases 1 and 2 alternate for --rounds rounds (the server stays up, idle, during the offline
  runs) and the ratio compares summed texts over summed seconds, so that a neighbour's load
  drifting during the run hits both sides alike.
  3. server, cache hits: a server on a cache pre-filled with the headlines, 32 clients replaying
     them → requests/s. Target ≥ 2,000.
  Where serve's gap to offline goes: the engine alone in one process (no HTTP), the headlines all
  at once (score's length-sorted batches) and in arrival-order batches of --clients texts (what
  serve's batcher hands it): the first ratio is what serve's small batches cost ONNX Runtime, the
  second (serve / engine in arrival batches) what the HTTP layer costs.

The clients are a minimal asyncio HTTP/1.1 keep-alive loop (not httpx) so that, on a small
machine, the load generator takes as little CPU from the server as possible; it shares the
machine's cores with the server, which makes both server figures conservative.
Prints a markdown table and writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
RESULTS = HERE / "results" / "serve.json"
sys.path.insert(0, str(HERE))

_SECONDS = re.compile(r" in ([\d.]+) s \(")
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline(model: Path, texts_file: Path, threads: int, n: int) -> dict:
    """`sentictl score --no-cache` in a subprocess: scoring-only rate (from its summary) and whole-process rate."""
    cmd = [
        sys.executable,
        "-m",
        "sentictl",
        "score",
        str(texts_file),
        "--model-dir",
        str(model),
        "--no-cache",
        "--threads",
        str(threads),
        "--no-progress",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=_env(), check=True)
    wall = time.perf_counter() - started
    lines = proc.stdout.count(b"\n")
    if lines != n:
        raise SystemExit(f"score wrote {lines} results for {n} texts")
    seconds = float(_SECONDS.search(proc.stderr.decode()).group(1))
    return {"texts": n, "rate": n / seconds, "seconds": seconds, "process_rate": n / wall, "process_s": wall}


_ENGINE_ALONE = """
import json, resource, sys, time
from sentictl.engine import Engine, load
model_dir, threads, clients, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
texts = [line for line in open(path, encoding="utf-8").read().splitlines() if line]
engine = Engine(load(model_dir, threads=threads, quiet=True, spin_after_run=False))

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def all_at_once():  # score's way: the whole chunk sorted by length under the per-run token budget
    engine.classify(texts)

def arrival_batches():  # serve's way: what the batcher hands the engine, `clients` requests at a time
    for i in range(0, len(texts), clients):
        engine.infer(engine.prepare(texts[i : i + clients]).misses, arrival_order=True)

out = {}
all_at_once()
for name, fn in (("all_at_once", all_at_once), ("arrival_batches", arrival_batches)) * 2:
    c, t = cpu(), time.perf_counter()
    fn()
    c, t = cpu() - c, time.perf_counter() - t
    best = out.get(name)
    if best is None or t < best["seconds"]:
        out[name] = {"seconds": t, "rate": len(texts) / t, "cpu_ms_per_text": c / len(texts) * 1000}
print(json.dumps(out))
"""


def engine_alone(model: Path, texts_file: Path, threads: int, clients: int) -> dict:
    """The engine in one process, no HTTP: the texts all at once (score's batching) and in arrival-order
    batches of `clients` texts (what serve's batcher hands it), the faster of two runs each. It
    splits serve's gap to offline into what batching costs and what the HTTP layer costs."""
    cmd = [sys.executable, "-c", _ENGINE_ALONE, str(model), str(threads), str(clients), str(texts_file)]
    return json.loads(subprocess.run(cmd, capture_output=True, env=_env(), check=True).stdout)


class Serve:
    """A `sentictl serve` subprocess, stopped with SIGTERM."""

    def __init__(
        self,
        model: Path,
        threads: int,
        extra: list[str],
        launcher: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        """``launcher``: the command that stands for `sentictl` (bench_memory wraps ONNX Runtime in one)."""
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                *(launcher or [sys.executable, "-m", "sentictl"]),
                "serve",
                "--model-dir",
                str(model),
                "--threads",
                str(threads),
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env or _env(),
        )
        deadline = time.monotonic() + 120
        while _get(self.port, "/health")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not become healthy: {self.proc.stderr.read().decode()}")
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out = {}
        for family in text_string_to_metric_families(_get(self.port, "/metrics")[1].decode()):
            for s in family.samples:
                if not s.labels:
                    out[s.name] = s.value
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        return self.proc.returncode


def _get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except OSError:
        return 0, b""


async def _client(port: int, work: list[bytes], cursor: list[int], check: bool, errors: list[str]) -> int:
    """One keep-alive connection taking the next headline until the list is done."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while cursor[0] < len(work):
            body = work[cursor[0]]
            cursor[0] += 1
            writer.write(
                b"POST /sentiment HTTP/1.1\r\nhost: bench\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            payload = await reader.readexactly(int(_LENGTH.search(head).group(1)))
            if head[9:12] != b"200":
                errors.append(head[:12].decode() + " " + payload[:200].decode(errors="replace"))
            elif check and orjson.loads(payload)["text"].encode() != body:
                errors.append("a caller got someone else's result")
            done += 1
    finally:
        writer.close()
    return done


def drive(port: int, work: list[bytes], clients: int, check: bool = True) -> dict:
    """Send every body once over `clients` concurrent connections; requests/s over the whole run."""
    errors: list[str] = []

    async def run():
        cursor = [0]
        return sum(await asyncio.gather(*(_client(port, work, cursor, check, errors) for _ in range(clients))))

    started = time.perf_counter()
    done = asyncio.run(run())
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} bad answers, e.g. {errors[0]}")
    return {"requests": done, "seconds": seconds, "rate": done / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="headlines per phase (max 2,000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads, both sides")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of offline and server (misses)")
    parser.add_argument("--hit-rounds", type=int, default=20, help="times the cache-hit phase replays the headlines")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the FinBERT-shaped benchmark model")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="pass to the server (default: its own default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.model_dir is None:
        from make_models import ensure

        args.model_dir = ensure()
    headlines = [line for line in HEADLINES.read_text().splitlines() if line.strip()][: args.n]
    n = len(headlines)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "headlines.txt"
        texts_file.write_text("\n".join(headlines) + "\n")
        work = [h.encode() for h in headlines]

        wait = ["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else []
        server = Serve(args.model_dir, args.threads, ["--no-cache", *wait])
        offs, misses, batches, batched = [], [], 0.0, 0.0
        try:
            drive(server.port, work[: min(64, n)], args.clients)  # warm-up: first batches pay allocation costs
            for r in range(args.rounds):
                print(
                    f"round {r + 1}/{args.rounds}: offline `sentictl score --no-cache`, {n} headlines, "
                    f"--threads {args.threads} ...",
                    file=sys.stderr,
                )
                offs.append(offline(args.model_dir, texts_file, args.threads, n))
                print(
                    f"round {r + 1}/{args.rounds}: server, {args.clients} clients, one headline per request ...",
                    file=sys.stderr,
                )
                before, cpu = server.metrics(), _cpu_seconds(server.proc.pid)
                misses.append(drive(server.port, work, args.clients))
                after = server.metrics()
                misses[-1]["server_cpu_ms"] = (_cpu_seconds(server.proc.pid) - cpu) / n * 1000
                misses[-1]["ratio"] = misses[-1]["rate"] / offs[-1]["rate"]
                batches += after["sentictl_batch_size_count"] - before["sentictl_batch_size_count"]
                batched += after["sentictl_batch_size_sum"] - before["sentictl_batch_size_sum"]
        finally:
            miss_exit = server.stop()
        off_seconds = sum(o["seconds"] for o in offs)
        off = {
            "texts": n * len(offs),
            "rate": n * len(offs) / off_seconds,
            "process_rate": n * len(offs) / sum(o["process_s"] for o in offs),
            "rounds": offs,
        }
        miss = {"requests": sum(m["requests"] for m in misses), "seconds": sum(m["seconds"] for m in misses)}
        miss.update(
            rate=miss["requests"] / miss["seconds"],
            mean_batch=batched / max(batches, 1),
            exit_status=miss_exit,
            rounds=misses,
            # A neighbour's load moves wall-clock rates a lot on a shared machine; CPU per request much less.
            server_cpu_ms_per_request=sum(m["server_cpu_ms"] for m in misses) / len(misses),
            median_round_ratio=sorted(m["ratio"] for m in misses)[len(misses) // 2],
        )

        print("engine alone (no HTTP): all at once, then in arrival batches ...", file=sys.stderr)
        alone = engine_alone(args.model_dir, texts_file, args.threads, args.clients)

        print("server, cache hits ...", file=sys.stderr)
        cache = Path(tmp) / "cache.sqlite"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sentictl",
                "score",
                str(texts_file),
                "--model-dir",
                str(args.model_dir),
                "--cache",
                str(cache),
                "--threads",
                str(args.threads),
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            env=_env(),
            check=True,
        )
        server = Serve(args.model_dir, args.threads, ["--cache", str(cache)])
        try:
            drive(server.port, work[: min(200, n)], args.clients)
            before = server.metrics()
            hit = drive(server.port, work * args.hit_rounds, args.clients)
            after = server.metrics()
        finally:
            hit_exit = server.stop()
        hit["inferred"] = after["sentictl_batch_size_sum"] - before["sentictl_batch_size_sum"]
        hit["exit_status"] = hit_exit

    ratio = miss["rate"] / off["rate"]
    load_after = os.getloadavg()[0]
    result = {
        "model": str(args.model_dir.relative_to(REPO) if args.model_dir.is_relative_to(REPO) else args.model_dir),
        "headlines": n,
        "rounds": args.rounds,
        "threads": args.threads,
        "clients": args.clients,
        "max_wait_ms": args.max_wait_ms,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": round(load_before, 2),
            "load_avg_after": round(load_after, 2),
        },
        "offline_score": off,
        "serve_miss": miss,
        "serve_hit": hit,
        "engine_alone": alone,
        "ratio_serve_to_offline": ratio,
        "targets": {"ratio": 0.9, "hit_rps": 2000},
        "passed": {"ratio": ratio >= 0.9, "hit_rps": hit["rate"] >= 2000},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| measure ({n} headlines × {args.rounds} rounds, --threads {args.threads}) | value | target |")
    print("|---|---|---|")
    print(f"| offline `sentictl score --no-cache` (scoring only) | {off['rate']:,.1f} texts/s | |")
    print(f"| offline, whole process incl. start-up | {off['process_rate']:,.1f} texts/s | |")
    print(
        f"| `serve`, {args.clients} clients, 1 headline/request, no cache | {miss['rate']:,.1f} req/s "
        f"(mean batch {miss['mean_batch']:.1f}) | |"
    )
    per_round = ", ".join(f"{m['ratio']:.2f}" for m in misses)
    print(f"| serve / offline | **{ratio:.2f}×** (per round: {per_round}) | ≥ 0.9× |")
    print(f"| `serve` CPU per request (all threads) | {miss['server_cpu_ms_per_request']:.1f} ms | |")
    print(f"| `serve`, cache hits | **{hit['rate']:,.0f} req/s** | ≥ 2,000 |")
    a, b = alone["all_at_once"], alone["arrival_batches"]
    print(
        f"| where the rest goes: the engine alone, all texts at once | {a['rate']:,.1f} texts/s "
        f"({a['cpu_ms_per_text']:.1f} ms CPU/text) | |"
    )
    print(
        f"| the engine alone, arrival batches of {args.clients} (serve's batches, no HTTP) | {b['rate']:,.1f} texts/s "
        f"({b['cpu_ms_per_text']:.1f} ms CPU/text): {b['rate'] / a['rate']:.2f}× of all at once | |"
    )
    print(f"| serve / engine in arrival batches (the HTTP layer's share) | {miss['rate'] / b['rate']:.2f}× | |")
    print(
        f"\nload average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs "
        f"shared with other jobs; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
