"""Peak memory of `sentictl score` on hostile inputs: endless lines and one gigantic line.

    .venv/bin/python benchmarks/bench_read_memory.py                 # 20 s of /dev/zero, a 1 GB line, each format
    .venv/bin/python benchmarks/bench_read_memory.py --seconds 5 --line-mb 100

Each case is a fresh `sentictl score --no-cache -q` process on the bundled model; its peak
resident set (ru_maxrss from wait4) is compared with the same command on one ordinary line:

- `/dev/zero` for --seconds (then SIGTERM): one line that never ends;
- a --line-mb MB single line (`Profit rose ` repeated, no newline until the end) piped to stdin,
  then one ordinary line, as txt, as the text field of a JSONL record, as a CSV cell and as a
  string in a JSON array.

Before issue 17 the first reached 2.8 GB in 5 s and the second grew with the line. The goal:
every case under 300 MB, and the ordinary line after the long one still scored. Prints a
markdown table and writes benchmarks/results/read_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SENTICTL = [sys.executable, "-m", "sentictl", "score", "--no-cache", "-q"]
PIECE = b"Profit rose "
LAST = "Shares fell after the warning"


def wrap(fmt: str) -> tuple[bytes, bytes, bytes, list[str]]:
    """(prefix, suffix after the long text, the ordinary record after it, extra args) for a format."""
    if fmt == "txt":
        return b"", b"\n", f"{LAST}\n".encode(), []
    if fmt == "jsonl":
        return b'{"text": "', b'"}\n', json.dumps({"text": LAST}).encode() + b"\n", ["--format", "jsonl"]
    if fmt == "csv":
        return b"text\n", b"\n", f"{LAST}\n".encode(), ["--format", "csv"]
    if fmt == "json":
        return b'["', b'", ', json.dumps(LAST).encode() + b"]", ["--format", "json"]
    raise ValueError(fmt)


def run(cmd: list[str], feed: callable | None = None, seconds: float | None = None) -> dict:
    """Run cmd (feeding stdin from ``feed``), return its peak RSS (MB), exit status and stdout lines."""
    env = dict(os.environ, SENTICTL_NO_VERIFY="")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read())),
        threading.Thread(target=lambda: err.append(proc.stderr.read())),
    ]
    for t in readers:
        t.start()
    if feed:
        try:
            feed(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    if seconds:
        time.sleep(seconds)  # the measurement window itself, not a synchronisation
        proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    stderr = b"".join(err).decode(errors="replace")
    return {
        "peak_mb": usage.ru_maxrss / 1024,
        "rc": proc.returncode,
        "results": len(b"".join(out).splitlines()),
        "traceback": "Traceback" in stderr,
    }


def long_line(fmt: str, mb: int):
    prefix, suffix, after, _ = wrap(fmt)
    block = PIECE * (1 << 16)

    def feed(stdin) -> None:
        stdin.write(prefix)
        left = mb << 20
        while left > 0:
            chunk = block[:left]
            stdin.write(chunk)
            left -= len(chunk)
        stdin.write(suffix + after)

    return feed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long /dev/zero is read (default 20)")
    parser.add_argument("--line-mb", type=int, default=1024, help="size of the single long line in MB (default 1024)")
    parser.add_argument("--formats", default="txt,jsonl,csv,json", help="formats of the long line")
    parser.add_argument("--out", default=str(HERE / "results" / "read_memory.json"))
    args = parser.parse_args()

    rows = []
    base = run(SENTICTL, feed=lambda s: s.write(f"{LAST}\n".encode()))
    rows.append(("one ordinary line (baseline)", base))
    print(f"baseline: {base}", file=sys.stderr)
    zero = run([*SENTICTL, "/dev/zero"], seconds=args.seconds)
    rows.append((f"/dev/zero for {args.seconds:g} s", zero))
    print(f"/dev/zero: {zero}", file=sys.stderr)
    for fmt in args.formats.split(","):
        case = run([*SENTICTL, *wrap(fmt)[3]], feed=long_line(fmt, args.line_mb))
        rows.append((f"{args.line_mb} MB single line, {fmt}, then one ordinary record", case))
        print(f"{fmt}: {case}", file=sys.stderr)

    print("| input | peak RSS | exit | results | traceback |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['peak_mb']:.0f} MB | {r['rc']} | {r['results']} | {'yes' if r['traceback'] else 'no'} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "seconds": args.seconds,
                "line_mb": args.line_mb,
                "rows": [{"input": name, **r} for name, r in rows],
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
