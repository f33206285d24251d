"""The bridge itself: connect, then poll a batch → Engine.classify → produce → flush → commit."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any, Callable

from .. import console
from ..engine import BadRecord, Engine, Record
from ..errors import BridgeError
from ..kafka import (
    ConnectStopped,
    TopicTemplate,
    check_topic,
    connect_with_retry,
    make_consumer,
    make_producer,
)
from . import eos
from .metrics import BridgeMetrics, BridgeStats
from .settings import (
    LABEL_HEADER,
    MODEL_HEADER,
    TEMPLATE_FIELDS,
    BridgeSettings,
    dlq_headers,
    enrich,
)

# How long one poll blocks: short enough that a signal or a stop condition is noticed quickly.
POLL_MS = 500
# Once a batch has its first records, keep polling this long to fill it: brokers (tansu among
# them) may hand out one small record batch per fetch, and classifying a few records at a time
# wastes the engine's length-sorted batching.
LINGER_MS = 100


class Bridge:
    """One consumer-group member: connect(), run(timeout=, count=), close()."""

    def __init__(self, model: Any, cache: Any, settings: BridgeSettings,
                 log: Callable[[str], None] | None = None, progress: bool = True):
        self.model = model
        self.cache = cache
        self.engine = Engine(model, cache, max_chars=settings.max_chars)
        self.s = settings
        self.log = log or (lambda msg: console.line(f"sentictl bridge: {msg}"))
        self.progress = progress
        self.stats = BridgeStats()
        self.consumer = None
        self.producer = None
        self.metrics: BridgeMetrics | None = None
        self.assignment: list[tuple[str, int]] = []
        self.assigned_at: float | None = None
        self._stop = False
        if settings.input_format not in ("raw", "json"):
            raise BridgeError(f"unknown --input {settings.input_format!r}: use raw or json")
        self.out = self._check_topics()
        self._fp = model.fingerprint.encode()

    def _check_topics(self) -> TopicTemplate:
        """Refuse, before connecting, topics Kafka would reject and loops through an input topic."""
        s = self.s
        for topic in s.inputs:
            check_topic(topic, "--in")
        out = TopicTemplate(s.out, allowed=TEMPLATE_FIELDS, option="--out")
        looping = [t for t in out.check(label=self.engine.labels, topic=s.inputs) if t in s.inputs]
        if looping:
            raise BridgeError(f"--out {s.out!r} writes to the input topic {looping[0]!r}: "
                              f"the bridge would consume its own output")
        if s.dlq is not None:
            check_topic(s.dlq, "--dlq")
            if s.dlq in s.inputs:
                raise BridgeError(f"--dlq {s.dlq!r} is also an input topic: every bad record would come back forever")
        if s.exactly_once and s.eos_check:
            check_topic(s.eos_check_topic, "--eos-check-topic")
        return out

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        """Create the producer and the consumer (retrying until --connect-timeout), join the group."""
        s, kafka = self.s, self.s.kafka
        deadline = time.monotonic() + s.connect_timeout

        def retry(what: str, make: Callable[[float], Any]) -> Any:
            return connect_with_retry(make, kafka, what=what, timeout=s.connect_timeout, deadline=deadline,
                                      log=self.log, stopped=lambda: self._stop,
                                      hint="; --connect-timeout waits longer")

        producer_opts: dict[str, Any] = {}
        if s.exactly_once:
            tid = s.transactional_id or f"sentictl-{s.group}-{socket.gethostname()}-{os.getpid()}"
            producer_opts.update(transactional_id=tid, enable_idempotence=True, max_block_ms=15_000)
        self.producer = retry("producer", lambda t: make_producer(
            kafka, **producer_opts, bootstrap_timeout_ms=int(t * 1000)))
        if s.exactly_once:
            eos.init_transactions(self.producer, kafka, check=s.eos_check, check_topic=s.eos_check_topic)
        consumer_opts = dict(
            group_id=s.group, auto_offset_reset=s.offset_reset, max_poll_records=s.batch_size,
            session_timeout_ms=s.session_timeout_ms, max_poll_interval_ms=s.max_poll_interval_ms,
            heartbeat_interval_ms=max(100, min(3000, s.session_timeout_ms // 3)),
            isolation_level="read_committed" if s.exactly_once else "read_uncommitted",
        )
        self.consumer = retry("consumer", lambda t: make_consumer(
            kafka, **consumer_opts, bootstrap_timeout_ms=int(t * 1000)))
        self.consumer.subscribe(s.inputs, listener=self._listener())
        if s.metrics_port:
            self.metrics = BridgeMetrics(s.metrics_host, s.metrics_port)
            if self.cache is not None:
                metrics = self.metrics
                self.cache.on_failure = lambda op: metrics.cache_failures.labels(op).inc()
            self.log(f"metrics on http://{s.metrics_host}:{s.metrics_port}/metrics")
        mode = "exactly-once" if s.exactly_once else "at-least-once"
        self.log(f"{', '.join(s.inputs)} → {s.out} via {kafka.describe()}, group {s.group}, "
                 f"{mode}, model {self.model.name} ({self.model.fingerprint})")

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        bridge = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Offsets are committed at the end of every batch, so nothing is pending here.
                bridge.assignment = []

            def on_partitions_assigned(self, assigned):
                bridge.assignment = sorted((tp.topic, tp.partition) for tp in assigned)
                bridge.assigned_at = time.monotonic()
                shown = ", ".join(f"{t}[{p}]" for t, p in bridge.assignment) or "none"
                bridge.log(f"assigned {shown}")

        return Listener()

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask run() to return after the batch in hand (safe from a signal handler)."""
        self._stop = True

    def run(self, timeout: float | None = None, count: int | None = None) -> BridgeStats:
        """Process batches until stop(), `timeout` seconds, `count` consumed records or --idle-timeout."""
        if self.consumer is None:
            self.connect()
        count = count if count is not None else self.s.max_messages
        started = time.monotonic()
        last_record = None
        last_progress, progress_count = time.monotonic(), self.stats.consumed
        while not self._stop:
            now = time.monotonic()
            if timeout is not None and now - started >= timeout:
                break
            if count is not None and self.stats.consumed >= count:
                break
            # Idle time counts from the latest assignment, so joining or rebalancing is never "idle".
            idle_from = max(last_record or 0.0, self.assigned_at or 0.0) or None
            if self.s.idle_timeout is not None and idle_from is not None and now - idle_from >= self.s.idle_timeout:
                self.log(f"no records for {self.s.idle_timeout:g} s: stopping")
                break
            limit = self.s.batch_size if count is None else min(self.s.batch_size, count - self.stats.consumed)
            messages = self._collect(limit)
            if messages:
                self._process(messages)
                last_record = time.monotonic()
            if self.progress and time.monotonic() - last_progress >= self.s.progress_interval:
                elapsed = time.monotonic() - last_progress
                self._update_lag()
                self.log(self.stats.line((self.stats.consumed - progress_count) / elapsed))
                last_progress, progress_count = time.monotonic(), self.stats.consumed
        return self.stats

    def _collect(self, limit: int) -> list[Any]:
        """Up to ``limit`` records: wait up to POLL_MS for the first, then LINGER_MS for more."""
        polled = self.consumer.poll(timeout_ms=POLL_MS, max_records=limit)
        messages = [m for batch in polled.values() for m in batch]
        deadline = time.monotonic() + LINGER_MS / 1000
        while messages and len(messages) < limit and not self._stop:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            polled = self.consumer.poll(timeout_ms=int(left * 1000) + 1, max_records=limit - len(messages))
            more = [m for batch in polled.values() for m in batch]
            if not more:
                break
            messages += more
        return messages

    def _update_lag(self) -> None:
        lag, known = 0, False
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                lag += max(0, high - self.consumer.position(tp, timeout_ms=100))
                known = True
            except Exception:  # a position not yet known is not worth failing the progress line
                continue
        self.stats.lag = lag if known else None
        if self.metrics and known:
            self.metrics.lag.set(lag)

    def _process(self, messages: list[Any]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        t0 = time.perf_counter()
        if self.stats.first_record is None:
            self.stats.first_record = time.monotonic()
        good: list[tuple[Any, str, Any]] = []
        bad: list[tuple[Any, BadRecord]] = []
        field = self.s.text_field if self.s.input_format == "json" else None
        for m in messages:
            verdict = self.engine.check_bytes(m.value, json_field=field, source=m.topic, position=m.offset)
            if isinstance(verdict, Record):
                good.append((m, verdict.text, verdict.data))
            else:
                bad.append((m, verdict))
        results = self.engine.classify([text for _, text, _ in good]) if good else []

        offsets: dict[Any, Any] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)

        if self.s.exactly_once:
            self.producer.begin_transaction()
        futures = []
        hits = 0
        for (m, _text, obj), result in zip(good, results):
            hits += bool(result.get("cache_hit"))
            topic = self.out.render(label=result["label"], topic=m.topic)
            headers = list(m.headers or []) + [(MODEL_HEADER, self._fp), (LABEL_HEADER, result["label"].encode())]
            futures.append(self.producer.send(topic, value=enrich(result, obj), key=m.key, headers=headers))
        for m, poison in bad:
            self._report_poison(m, poison, futures)

        if self.s.exactly_once:
            self._commit_transaction(offsets)
        else:
            self._flush_and_check(futures)
            self._commit(offsets)
        self._count(messages, len(good), hits, bad, time.perf_counter() - t0)

    def _count(self, messages: list[Any], produced: int, hits: int, bad: list[tuple[Any, BadRecord]],
               seconds: float) -> None:
        st = self.stats
        st.consumed += len(messages)
        st.produced += produced
        st.cache_hits += hits
        st.poison += len(bad)
        st.dlq += len(bad) if self.s.dlq else 0
        st.batches += 1
        st.last_commit = time.monotonic()
        if self.metrics:
            mt = self.metrics
            mt.consumed.inc(len(messages))
            mt.produced.inc(produced)
            mt.cache_hits.inc(hits)
            for _, poison in bad:
                mt.poison.labels(poison.reason).inc()
            if self.s.dlq:
                mt.dlq.inc(len(bad))
            mt.batch_seconds.observe(seconds)

    def _report_poison(self, m: Any, poison: BadRecord, futures: list) -> None:
        if not self.s.dlq:
            where = f"{m.topic}[{m.partition}]@{m.offset}"
            self.log(f"bad record {where}: {poison.message} (skipped; --dlq TOPIC keeps such records)")
            return
        headers = dlq_headers(m, poison.reason, poison.message)
        futures.append(self.producer.send(self.s.dlq, value=m.value, key=m.key, headers=headers))

    def _flush_and_check(self, futures: list) -> None:
        self.producer.flush()
        for f in futures:
            try:
                f.get(timeout=0)
            except Exception as exc:
                # Not committing is what keeps the batch: a restart re-delivers it.
                raise BridgeError(
                    f"producing a result failed ({exc}); the batch's offsets were not committed, "
                    f"so a restart re-processes it") from None

    def _commit(self, offsets: dict) -> None:
        from kafka.errors import CommitFailedError, KafkaError

        try:
            self.consumer.commit(offsets)
            self.stats.commits += 1
            if self.metrics:
                self.metrics.commits.inc()
        except CommitFailedError:
            # The group rebalanced while this batch was in flight: its new owner re-delivers the
            # batch (a bounded duplicate), which is what at-least-once allows.
            self.log("offset commit refused after a rebalance: the batch will be re-delivered to its new owner")
        except KafkaError as exc:
            raise BridgeError(f"committing offsets failed ({exc}); a restart re-processes the last batch") from None

    def _commit_transaction(self, offsets: dict) -> None:
        from kafka.errors import KafkaError

        try:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
            self.stats.commits += 1
            if self.metrics:
                self.metrics.commits.inc()
        except KafkaError as exc:
            try:
                self.producer.abort_transaction()
            except KafkaError:
                pass
            raise BridgeError(
                f"the transaction for a batch failed ({exc}) and was aborted; nothing of it is visible "
                f"to read_committed consumers and a restart re-processes it") from None

    def close(self) -> None:
        """Flush the producer and leave the group (never committing unprocessed records)."""
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
            finally:
                self.producer.close(timeout=10)
            self.producer = None
        if self.consumer is not None:
            # autocommit=False: the consumer's position may be past records that were never
            # processed (fetched but not returned); only _process commits.
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None


def run_bridge(model: Any, cache: Any, settings: BridgeSettings, progress: bool = True) -> BridgeStats:
    """Connect, process until a stop condition or SIGTERM/SIGINT, commit, close; return the counters."""
    bridge = Bridge(model, cache, settings, progress=progress)

    def on_signal(signum, _frame):
        bridge.log(f"{signal.Signals(signum).name}: finishing the batch in hand, then committing and closing")
        bridge.stop()
        # A second signal falls back to the default behaviour (Ctrl-C twice really stops).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            bridge.connect()
        except ConnectStopped:
            bridge.log("stopped before connecting: nothing consumed")
            return bridge.stats
        stats = bridge.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bridge.close()
    busy = stats.busy_rate()
    busy_text = f", {busy:,.1f} texts/s from first record to last commit" if busy else ""
    bridge.log(f"done: {stats.line()} in {time.monotonic() - stats.started:.1f} s{busy_text}")
    return stats
