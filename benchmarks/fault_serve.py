"""Fault drills for `sentictl serve`: hostile HTTP clients against a real server on loopback.

    python benchmarks/fault_serve.py                          # the three drills
    python benchmarks/fault_serve.py --only slow --slow 1100 --nofile 1024

(a) slow: the server runs with its descriptor limit lowered to --nofile (soft = hard, so it
    cannot raise it); --slow connections each send `POST /sentiment HTTP/1.1`, one header, and
    never finish; while they are held, --normal clients each send one ordinary request (10 s
    client timeout) → how many got 200 and their latencies, how long until the server had
    closed every slow connection (--header-timeout), and whether it logged "Too many open files".
(b) big: --big-clients clients post texts of about --big-bytes each, in a loop for --big-seconds
    (the server started with --max-chars and --max-body-bytes raised to accept them), while a
    probe times GET /health every 50 ms on a kept-alive connection → p50/p99 (goal ≤ 100 ms).
(c) schemathesis: `schemathesis run --checks all` against /openapi.json, --max-examples per
    operation → failures.

Every loop stops by itself (a count or a deadline). Model: --model-dir, default the
FinBERT-shaped benchmark model if benchmarks/_work/finbert-shaped exists, else the bundled one.
Prints a markdown table and writes benchmarks/results/fault_serve.json.
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
RESULTS = HERE / "results" / "fault_serve.json"
FINBERT_SHAPED = HERE / "_work" / "finbert-shaped"
HOST = "127.0.0.1"  # loopback only
PARTIAL = b"POST /sentiment HTTP/1.1\r\nHost: x\r\n"
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _raise_own_limit(needed: int) -> None:
    """This process holds the slow connections: it needs more descriptors than the server gets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"this process may open {soft} descriptors, the drill needs {needed}: raise `ulimit -n`")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Serve:
    """A `sentictl serve` subprocess (stderr to a file, so a chatty server never blocks on a pipe)."""

    def __init__(self, model: Path | None, args: list[str], nofile: int | None = None):
        self.port = _free_port()
        self.log = tempfile.TemporaryFile()
        model_args = ["--model-dir", str(model)] if model is not None else []

        def limit() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentictl", "serve", "--port", str(self.port), "--no-cache", *model_args, *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=_env(),
            preexec_fn=limit,
        )
        deadline = time.monotonic() + 180
        while asyncio.run(_call(self.port, "GET", "/health", timeout=5))[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"server did not become healthy:\n{self.stderr()}")
            time.sleep(0.2)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def get_json(self, path: str) -> Any:
        status, body, _ = asyncio.run(_call(self.port, "GET", path, timeout=30))
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        _, body, _ = asyncio.run(_call(self.port, "GET", "/metrics", timeout=30))
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.stderr()
        self.log.close()
        return self.proc.returncode, err


# ---------------------------------------------------------------------------------- a tiny client
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status == 100:  # never asked for; skip it like any client would
        return await _read_response(reader)
    length = _LENGTH.search(head)
    return status, await reader.readexactly(int(length.group(1))) if length else await reader.read()


async def _call(
    port: int, method: str, path: str, body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes, float]:
    """One request on a connection of its own: (status or 0 when it failed, body, seconds)."""
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: fault\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        remaining = timeout - (time.perf_counter() - started)
        status, payload = await asyncio.wait_for(_read_response(reader), max(0.001, remaining))
        return status, payload, time.perf_counter() - started
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return 0, repr(exc).encode(), time.perf_counter() - started
    finally:
        if writer is not None:
            writer.close()


class KeptAlive:
    """One kept-alive connection for a probe (reopened if the server closes it)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, timeout: float) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), timeout)
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: fault\r\n\r\n".encode())
        try:
            status, _ = await asyncio.wait_for(_read_response(self.reader), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            self.close()
            return 0
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


# ---------------------------------------------------------------------------------- the drills
def slow_drill(model: Path | None, n_slow: int, n_normal: int, nofile: int, header_timeout: float) -> dict:
    """(a) a flood of never-finished requests against a server with few descriptors, plus real clients."""
    _raise_own_limit(n_slow + 256)
    server = Serve(model, ["--header-timeout", str(header_timeout)], nofile=nofile)
    info = server.get_json("/info")

    async def run() -> dict:
        slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        failed = 0

        async def open_one() -> None:
            nonlocal failed
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, server.port), 30)
            except (OSError, asyncio.TimeoutError):
                failed += 1
                return
            writer.write(PARTIAL)
            slow.append((reader, writer))

        started = time.perf_counter()
        for first in range(0, n_slow, 100):
            await asyncio.gather(*(open_one() for _ in range(min(100, n_slow - first))))
        opened_s = time.perf_counter() - started
        normal = await asyncio.gather(
            *(
                _call(server.port, "POST", "/sentiment", f"quarterly profit rose {i} percent".encode(), timeout=10)
                for i in range(n_normal)
            )
        )
        after_normal = time.perf_counter() - started

        # How long until the server has closed every slow connection (bounded wait).
        closed_at: list[float] = []

        async def until_closed(reader: asyncio.StreamReader) -> None:
            try:
                await asyncio.wait_for(reader.read(), header_timeout + 30 - (time.perf_counter() - started))
            except asyncio.TimeoutError:
                return
            except OSError:
                pass
            closed_at.append(time.perf_counter() - started)

        await asyncio.gather(*(until_closed(reader) for reader, _ in slow))
        for _, writer in slow:
            writer.close()
        return {
            "slow_requested": n_slow,
            "slow_opened": len(slow),
            "slow_connect_failed": failed,
            "slow_opened_in_s": round(opened_s, 3),
            "normal": n_normal,
            "normal_200": sum(1 for s, _, _ in normal if s == 200),
            "normal_statuses": [s for s, _, _ in normal],
            "normal_latency_ms": [round(t * 1000, 1) for _, _, t in normal],
            "normal_done_after_s": round(after_normal, 3),
            "slow_closed_by_server": len(closed_at),
            "slow_still_open": len(slow) - len(closed_at),
            "all_slow_closed_after_s": round(max(closed_at), 3) if closed_at else None,
        }

    try:
        out = asyncio.run(run())
        m = server.metrics()
    finally:
        code, err = server.stop()
    out.update(
        {
            "server_nofile": nofile,
            "server_max_connections": info["max_connections"],
            "header_timeout_s": header_timeout,
            "shed": m.get('sentictl_connections_closed_total{reason="shed"}'),
            "header_timeouts": m.get('sentictl_connections_closed_total{reason="header_timeout"}'),
            "refused_503": m.get('sentictl_connections_closed_total{reason="refused"}'),
            "too_many_open_files_logged": "Too many open files" in err,
            "tracebacks_logged": err.count("Traceback"),
            "server_exit": code,
        }
    )
    return out


def _big_text(size: int) -> bytes:
    lines = [line for line in HEADLINES.read_text().splitlines() if line.strip()] if HEADLINES.exists() else []
    lines = lines or ["Quarterly profit rose on record sales while the outlook stayed cautious."]
    out, total, i = [], 0, 0
    while total < size:
        line = lines[i % len(lines)]
        out.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(out).encode()[:size]


def big_drill(model: Path | None, clients: int, size: int, seconds: float, interval: float) -> dict:
    """(b) clients posting ~size-byte texts while a probe times GET /health."""
    server = Serve(model, ["--max-chars", str(size * 2), "--max-body-bytes", str(size * 4)])
    text = _big_text(size)

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        stop = loop.time() + seconds
        posts: list[tuple[int, float]] = []
        health: list[float] = []
        health_failed = 0

        async def poster(i: int) -> None:
            n = 0
            while loop.time() < stop:
                status, _, took = await _call(
                    server.port, "POST", "/sentiment", b"[%d-%d] " % (i, n) + text, timeout=180
                )
                posts.append((status, took))
                n += 1

        async def probe() -> None:
            nonlocal health_failed
            conn = KeptAlive(server.port)
            await asyncio.sleep(min(1.0, seconds / 10))  # let the posters get going
            while loop.time() < stop:
                t0 = time.perf_counter()
                status = await conn.get("/health", timeout=30)
                if status == 200:
                    health.append(time.perf_counter() - t0)
                else:
                    health_failed += 1
                await asyncio.sleep(interval)
            conn.close()

        await asyncio.gather(probe(), *(poster(i) for i in range(clients)))
        ok = [t for s, t in posts if s == 200]
        return {
            "clients": clients,
            "text_bytes": len(text),
            "seconds": seconds,
            "posts": len(posts),
            "posts_200": len(ok),
            "post_statuses": sorted({s for s, _ in posts}),
            "post_p50_ms": round(_pct(ok, 50) * 1000, 1) if ok else None,
            "health_probes": len(health),
            "health_failed": health_failed,
            "health_p50_ms": round(_pct(health, 50) * 1000, 2) if health else None,
            "health_p99_ms": round(_pct(health, 99) * 1000, 2) if health else None,
            "health_max_ms": round(max(health) * 1000, 2) if health else None,
            "health_mean_ms": round(statistics.fmean(health) * 1000, 2) if health else None,
        }

    try:
        out = asyncio.run(run())
    finally:
        code, err = server.stop()
    out.update({"server_exit": code, "tracebacks_logged": err.count("Traceback")})
    return out


def schemathesis_drill(model: Path | None, max_examples: int, timeout: float) -> dict:
    """(c) every schemathesis check against /openapi.json."""
    server = Serve(model, [])
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(exe) if exe.exists() else "schemathesis",
        "--no-color",
        "run",
        f"http://{HOST}:{server.port}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        "1",
    ]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=_env(), check=False)
        output, code = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace"), proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = (exc.stdout or b"").decode(errors="replace") + "\n(timed out)", None
    finally:
        server_code, err = server.stop()
    return {
        "command": " ".join(cmd[1:]).replace(str(server.port), "PORT"),
        "exit": code,
        "seconds": round(time.perf_counter() - started, 1),
        **_schemathesis_findings(output),
        "output_tail": output[-6000:],
        "server_exit": server_code,
        "tracebacks_logged": err.count("Traceback"),
    }


def _schemathesis_findings(output: str) -> dict:
    """From schemathesis' report: "OPERATION: CHECK (status)" per failure, and its summary lines."""
    failures, operation, check = [], "?", None
    for line in output.splitlines():
        text = line.strip()
        if heading := re.fullmatch(r"_+ (\S+ \S+) _+", text):
            operation = heading.group(1)
        elif found := re.fullmatch(r"- (ST\d+ .+)", text):
            check = found.group(1)
        elif (status := re.match(r"\[(\d{3})\]", text)) and check:
            failures.append(f"{operation}: {check} (answered {status.group(1)})")
            check = None
    summary = [
        line.strip()
        for line in output.splitlines()
        if re.search(r"\d+ generated|passed .*failed|^\s*❌ ST\d+|^\s*✅ .*passed$", line)
    ]
    return {"failures": failures, "summary": list(dict.fromkeys(summary))}


# ---------------------------------------------------------------------------------- report
def table(results: dict) -> str:
    rows = ["| drill | measure | value | goal |", "|---|---|---|---|"]
    a = results.get("slow")
    if a:
        rows += [
            f"| (a) slow | server descriptor limit / connection cap | {a['server_nofile']} / {a['server_max_connections']} | cap below the limit |",
            f"| (a) slow | slow connections opened (of {a['slow_requested']}) | {a['slow_opened']} | |",
            f"| (a) slow | normal requests answered 200 | {a['normal_200']} of {a['normal']} | ≥ 4 of 5 |",
            f"| (a) slow | normal latencies (ms) | {', '.join(map(str, a['normal_latency_ms']))} | < 10 000 |",
            f"| (a) slow | slow connections shed at the cap / timed out / refused 503 | {a['shed']:g} / {a['header_timeouts']:g} / {a['refused_503']:g} | |",
            f"| (a) slow | slow connections closed by the server, last after (s) | {a['slow_closed_by_server']} of {a['slow_opened']}, {a['all_slow_closed_after_s']} | all, ≈ header timeout {a['header_timeout_s']:g} s |",
            f"| (a) slow | 'Too many open files' / tracebacks in the server log | {a['too_many_open_files_logged']} / {a['tracebacks_logged']} | False / 0 |",
        ]
    b = results.get("big")
    if b:
        rows += [
            f"| (b) big | posts of {b['text_bytes']:,} bytes by {b['clients']} clients in {b['seconds']:g} s (200s) | {b['posts']} ({b['posts_200']}), p50 {b['post_p50_ms']} ms | all 200 |",
            f"| (b) big | GET /health p50 / p99 / max (ms), {b['health_probes']} probes | {b['health_p50_ms']} / {b['health_p99_ms']} / {b['health_max_ms']} | p99 ≤ 100 |",
        ]
    c = results.get("schemathesis")
    if c:
        generated = next((line for line in c["summary"] if "generated" in line), "")
        rows += [f"| (c) schemathesis | {c['command']} | exit {c['exit']}, {generated} | no failures |"]
        rows += [f"| (c) schemathesis | failure | {f} | |" for f in c["failures"]] or [
            "| (c) schemathesis | failures | none | |"
        ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="slow,big,schemathesis", help="comma-separated drills to run")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="default: benchmarks/_work/finbert-shaped if present, else the bundled model",
    )
    parser.add_argument("--slow", type=int, default=1100, help="(a) slow connections")
    parser.add_argument("--normal", type=int, default=5, help="(a) normal clients")
    parser.add_argument("--nofile", type=int, default=1024, help="(a) the server's descriptor limit")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="(a) the server's --header-timeout")
    parser.add_argument("--big-clients", type=int, default=4, help="(b) clients posting big texts")
    parser.add_argument("--big-bytes", type=int, default=1_000_000, help="(b) bytes per text")
    parser.add_argument("--big-seconds", type=float, default=20.0, help="(b) how long they post")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="(b) seconds between /health probes")
    parser.add_argument("--max-examples", type=int, default=20, help="(c) schemathesis examples per operation")
    parser.add_argument("--schemathesis-timeout", type=float, default=600.0, help="(c) bound on the whole run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    model = args.model_dir or (FINBERT_SHAPED if (FINBERT_SHAPED / "manifest.json").is_file() else None)
    only = {d.strip() for d in args.only.split(",") if d.strip()}
    unknown = only - {"slow", "big", "schemathesis"}
    if unknown:
        parser.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "model": model.name if model else "bundled",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if "slow" in only:
        print(
            f"(a) {args.slow} slow connections against a server limited to {args.nofile} descriptors ...",
            file=sys.stderr,
        )
        results["slow"] = slow_drill(model, args.slow, args.normal, args.nofile, args.header_timeout)
    if "big" in only:
        print(
            f"(b) {args.big_clients} clients posting {args.big_bytes:,}-byte texts for {args.big_seconds:g} s "
            f"while /health is timed ...",
            file=sys.stderr,
        )
        results["big"] = big_drill(model, args.big_clients, args.big_bytes, args.big_seconds, args.probe_interval)
    if "schemathesis" in only:
        print(f"(c) schemathesis --checks all, {args.max_examples} examples per operation ...", file=sys.stderr)
        results["schemathesis"] = schemathesis_drill(model, args.max_examples, args.schemathesis_timeout)

    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
