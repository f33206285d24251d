"""The Kafka front end: poll a batch → classify_cached → produce → flush → commit.

Delivery is at-least-once by default: consumed offsets are committed only after every record
of the batch (results and dead letters) has been acknowledged by the broker, so a crash anywhere
re-delivers at most the batch in hand. ``exactly_once`` wraps each batch, its output and its
consumed offsets in one Kafka transaction instead.
"""

from __future__ import annotations

import os
import signal
import socket
import string
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from . import config
from .errors import SentictlError
from .pipeline import classify_cached

TEMPLATE_FIELDS = ("label", "topic")
MODEL_HEADER = "sentictl-model"
LABEL_HEADER = "sentictl-label"
# How long one poll blocks: short enough that a signal or a stop condition is noticed quickly.
POLL_MS = 500
# Once a batch has its first records, keep polling this long to fill it: brokers (tansu among
# them) may hand out one small record batch per fetch, and classifying a few records at a time
# wastes the engine's length-sorted batching.
LINGER_MS = 100


class BridgeError(SentictlError):
    """The bridge cannot start or cannot go on (broker, settings, a failed delivery)."""


class _Stopped(Exception):
    """A signal arrived while still waiting for the broker: nothing consumed, nothing to commit."""


@dataclass
class BridgeSettings:
    """Everything `sentictl bridge` needs besides the model and the cache."""

    inputs: list[str]
    out: str
    bootstrap: str = "localhost:9092"
    group: str = "sentictl"
    dlq: str | None = None
    input_format: str = "raw"
    text_field: str = "text"
    batch_size: int = 256
    exactly_once: bool = False
    transactional_id: str | None = None
    # Before using transactions, check that the broker aborts a crashed producer's transaction.
    eos_check: bool = True
    eos_check_topic: str = "__sentictl_eos_check"
    max_messages: int | None = None
    idle_timeout: float | None = None
    connect_timeout: float = 30.0
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    offset_reset: str = "earliest"
    max_chars: int = config.DEFAULT_MAX_CHARS
    progress_interval: float = 5.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    client_id: str = "sentictl-bridge"
    # kafka-python connection settings: security_protocol, ssl_*, sasl_* (None values dropped).
    security: dict[str, Any] = field(default_factory=dict)


@dataclass
class BridgeStats:
    """Counters of one bridge run, for the progress line, the summary and the metrics."""

    consumed: int = 0
    produced: int = 0
    dlq: int = 0
    poison: int = 0
    cache_hits: int = 0
    batches: int = 0
    commits: int = 0
    lag: int | None = None
    started: float = field(default_factory=time.monotonic)
    # First poll that returned records and the last commit: the busy span, without group joins or idling.
    first_record: float | None = None
    last_commit: float | None = None

    def busy_rate(self) -> float | None:
        """Records per second from the first polled record to the last commit."""
        if self.first_record is None or self.last_commit is None or self.last_commit <= self.first_record:
            return None
        return self.consumed / (self.last_commit - self.first_record)

    def line(self, rate: float | None = None) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        rate = self.consumed / seconds if rate is None else rate
        parts = [f"consumed {self.consumed}", f"produced {self.produced}", f"dlq {self.dlq}",
                 f"bad {self.poison}", f"cache hits {self.cache_hits}", f"{rate:,.0f} texts/s"]
        if self.lag is not None:
            parts.append(f"lag {self.lag}")
        return ", ".join(parts)


@dataclass
class Poison:
    """A record that cannot be classified: why, in a short code and in words."""

    kind: str
    message: str


def check_template(template: str) -> list[str]:
    """The placeholders of an --out template; unknown ones are a user error."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise BridgeError(f"bad --out template {template!r}: {exc}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise BridgeError(
                f"bad --out template {template!r}: unknown placeholder {{{name}}} "
                f"(use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}, e.g. '{{label}}-news')"
            )
    return names


def extract(value: bytes | None, input_format: str, field_path: str, max_chars: int) -> tuple[str, Any] | Poison:
    """(text, parsed JSON object or None) from one record value, or why it is poison."""
    if value is None:
        return Poison("empty", "record has no value (tombstone)")
    # A cheap bound before decoding: UTF-8 needs at most 4 bytes per character.
    if len(value) > 4 * max_chars:
        return Poison("too_long", f"value is {len(value):,} bytes, over the limit of {max_chars:,} characters (--max-chars)")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        return Poison("invalid_utf8", "invalid UTF-8")
    obj = None
    if input_format == "json":
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Poison("bad_json", f"bad JSON: {exc}")
        text: Any = obj
        for part in field_path.split("."):
            if not isinstance(text, dict) or part not in text:
                return Poison("missing_field", f"missing field {field_path!r}")
            text = text[part]
        if not isinstance(text, str):
            return Poison("not_string", f"field {field_path!r} is not a string")
    else:
        text = decoded
    if not text.strip():
        return Poison("empty", "empty text")
    if len(text) > max_chars:
        return Poison("too_long", f"text is {len(text):,} characters, over the limit of {max_chars:,} (--max-chars)")
    return text, obj


def enrich(result: dict[str, Any], obj: Any) -> bytes:
    """The output value: the result record for raw input, the object plus "sentiment" for JSON."""
    if obj is None:
        return orjson.dumps(result)
    sentiment = {k: v for k, v in result.items() if k != "text"}
    return orjson.dumps({**obj, "sentiment": sentiment})


class _Metrics:
    """Prometheus counters on their own registry, served on 127.0.0.1 by default."""

    def __init__(self, host: str, port: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("sentictl_bridge_consumed", "Records consumed", registry=r)
        self.produced = Counter("sentictl_bridge_produced", "Results produced", registry=r)
        self.poison = Counter("sentictl_bridge_bad_records", "Records that could not be classified", ["kind"], registry=r)
        self.dlq = Counter("sentictl_bridge_dlq", "Records sent to the dead-letter topic", registry=r)
        self.cache_hits = Counter("sentictl_bridge_cache_hits", "Results served from the cache", registry=r)
        self.commits = Counter("sentictl_bridge_commits", "Offset commits (or committed transactions)", registry=r)
        self.lag = Gauge("sentictl_bridge_lag", "Records behind the end of the assigned partitions", registry=r)
        self.batch_seconds = Histogram("sentictl_bridge_batch_seconds", "Poll-to-commit time of one batch", registry=r)
        self.cache_failures = Counter("sentictl_bridge_cache_failures",
                                      "Result-cache operations that failed (the records were classified uncached)",
                                      ["op"], registry=r)
        for op in ("read", "write", "damaged"):
            self.cache_failures.labels(op)
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=r)
        except OSError as exc:
            raise BridgeError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.server.shutdown()


class Bridge:
    """One consumer-group member: connect(), run(timeout=, count=), close()."""

    def __init__(self, model: Any, cache: Any, settings: BridgeSettings,
                 log: Callable[[str], None] | None = None, progress: bool = True):
        self.model = model
        self.cache = cache
        self.s = settings
        self.log = log or (lambda msg: print(f"sentictl bridge: {msg}", file=sys.stderr, flush=True))
        self.progress = progress
        self.stats = BridgeStats()
        self.consumer = None
        self.producer = None
        self.metrics: _Metrics | None = None
        self.assignment: list[tuple[str, int]] = []
        self._stop = False
        self._assigned_at: float | None = None
        self._fixed_out = not check_template(settings.out)
        if self._fixed_out and settings.out in settings.inputs:
            raise BridgeError(f"--out {settings.out!r} is also an input topic: the bridge would consume its own output")
        if settings.input_format not in ("raw", "json"):
            raise BridgeError(f"unknown --input {settings.input_format!r}: use raw or json")
        self._fp = model.fingerprint.encode()

    # -- connecting -------------------------------------------------------------------------

    def _common(self) -> dict[str, Any]:
        sec = {k: v for k, v in self.s.security.items() if v is not None}
        return {"bootstrap_servers": self.s.bootstrap.split(","), "client_id": self.s.client_id, **sec}

    def _with_retry(self, what: str, make: Callable[[float], Any], deadline: float) -> Any:
        from kafka.errors import KafkaConfigurationError, KafkaError

        delay, attempt = 0.25, 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return make(max(0.5, min(remaining, 5.0)))
            except (KafkaConfigurationError, ValueError) as exc:
                # Settings that can never work (e.g. SASL without a user name): no point retrying.
                raise BridgeError(f"invalid Kafka client settings: {exc}") from None
            except (KafkaError, OSError) as exc:
                remaining = deadline - time.monotonic()
                if self._stop:
                    raise _Stopped() from None
                if remaining <= 0:
                    raise BridgeError(
                        f"cannot reach the Kafka broker at {self.s.bootstrap} ({what}) after "
                        f"{self.s.connect_timeout:g} s and {attempt} attempts: {exc}. Check --bootstrap, that the "
                        f"broker is up, and the TLS/SASL options; --connect-timeout waits longer"
                    ) from None
                if attempt == 1:
                    self.log(f"waiting for the broker at {self.s.bootstrap} (up to {self.s.connect_timeout:g} s)")
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 4.0)

    def connect(self) -> None:
        """Create the producer and the consumer (retrying until --connect-timeout), join the group."""
        from kafka import KafkaConsumer, KafkaProducer

        deadline = time.monotonic() + self.s.connect_timeout
        common = self._common()
        producer_opts: dict[str, Any] = {"acks": "all", "linger_ms": 5}
        if self.s.exactly_once:
            tid = self.s.transactional_id or f"sentictl-{self.s.group}-{socket.gethostname()}-{os.getpid()}"
            producer_opts.update(transactional_id=tid, enable_idempotence=True, max_block_ms=15_000)
        self.producer = self._with_retry(
            "producer", lambda t: KafkaProducer(**common, **producer_opts, bootstrap_timeout_ms=int(t * 1000)), deadline)
        if self.s.exactly_once:
            self._init_transactions()
        heartbeat = max(100, min(3000, self.s.session_timeout_ms // 3))
        consumer_opts = dict(
            group_id=self.s.group, enable_auto_commit=False, auto_offset_reset=self.s.offset_reset,
            max_poll_records=self.s.batch_size, session_timeout_ms=self.s.session_timeout_ms,
            max_poll_interval_ms=self.s.max_poll_interval_ms, heartbeat_interval_ms=heartbeat,
            isolation_level="read_committed" if self.s.exactly_once else "read_uncommitted",
        )
        self.consumer = self._with_retry(
            "consumer", lambda t: KafkaConsumer(**common, **consumer_opts, bootstrap_timeout_ms=int(t * 1000)), deadline)
        self.consumer.subscribe(self.s.inputs, listener=self._listener())
        if self.s.metrics_port:
            self.metrics = _Metrics(self.s.metrics_host, self.s.metrics_port)
            if self.cache is not None:
                metrics = self.metrics
                self.cache.on_failure = lambda op: metrics.cache_failures.labels(op).inc()
            self.log(f"metrics on http://{self.s.metrics_host}:{self.s.metrics_port}/metrics")
        mode = "exactly-once" if self.s.exactly_once else "at-least-once"
        self.log(f"{', '.join(self.s.inputs)} → {self.s.out} via {self.s.bootstrap}, group {self.s.group}, "
                 f"{mode}, model {self.model.name} ({self.model.fingerprint})")

    def _init_transactions(self) -> None:
        from kafka.errors import KafkaError

        version = self.producer.config.get("api_version")
        if version is not None and tuple(version) < (0, 11):
            raise BridgeError(
                f"--exactly-once: the broker at {self.s.bootstrap} speaks Kafka {'.'.join(map(str, version))}, "
                f"which has no transactions (needs 0.11+); run without --exactly-once for at-least-once delivery")
        if self.s.eos_check:
            self._check_fencing()
        try:
            self.producer.init_transactions()
        except KafkaError as exc:
            raise BridgeError(
                f"--exactly-once: the broker at {self.s.bootstrap} cannot do transactions ({exc}); "
                f"run without --exactly-once for at-least-once delivery") from None

    def _check_fencing(self) -> None:
        """Refuse exactly-once unless the broker aborts a crashed producer's open transaction.

        That abort is what keeps a half-written batch invisible after kill -9; a broker that
        accepts transactions but skips it (tansu 0.6 does) would turn crash recovery into
        duplicates while the flag promised none.
        """
        import uuid

        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.errors import KafkaError

        topic, common = self.s.eos_check_topic, self._common()
        tid = f"sentictl-eos-check-{uuid.uuid4().hex[:12]}"
        crashed = fencer = reader = None
        refuse = (f"--exactly-once: the broker at {self.s.bootstrap} accepts transactions but does not abort "
                  f"the open transaction of a crashed producer when its successor starts")
        try:
            crashed = KafkaProducer(**common, transactional_id=tid, max_block_ms=10_000)
            crashed.init_transactions()
            crashed.begin_transaction()
            meta = crashed.send(topic, value=b"sentictl exactly-once check: must stay invisible", partition=0).get(timeout=10)
            fencer = KafkaProducer(**common, transactional_id=tid, max_block_ms=10_000)
            fencer.init_transactions()  # must abort `crashed`'s transaction
            reader = KafkaConsumer(**common, isolation_level="read_committed", enable_auto_commit=False)
            tp = TopicPartition(topic, 0)
            reader.assign([tp])
            reader.seek(tp, meta.offset)
            deadline = time.monotonic() + 10
            while reader.position(tp) <= meta.offset:
                if time.monotonic() > deadline:
                    raise BridgeError(f"{refuse} (could not confirm within 10 s); exactly-once cannot be guaranteed. "
                                      f"Run without --exactly-once (at-least-once), or --skip-eos-check to use it anyway")
                for batch in reader.poll(timeout_ms=200).values():
                    if any(m.offset == meta.offset for m in batch):
                        raise BridgeError(
                            f"{refuse}: after a crash its half-written batch would become visible to "
                            f"read_committed consumers, so exactly-once cannot be guaranteed. Run without "
                            f"--exactly-once (at-least-once, re-delivery bounded by one batch), or with "
                            f"--skip-eos-check to use transactions anyway")
        except KafkaError as exc:
            raise BridgeError(
                f"--exactly-once: checking the broker's transactions on topic {topic!r} failed ({exc}); "
                f"--eos-check-topic names another topic, --skip-eos-check skips the check") from None
        finally:
            if reader is not None:
                reader.close(autocommit=False)
            for producer in (fencer, crashed):
                if producer is not None:
                    try:
                        producer.close(timeout=1)
                    except Exception:  # a fenced producer may complain while closing; the check is done
                        pass

    def _listener(self):
        from kafka import ConsumerRebalanceListener

        bridge = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Offsets are committed at the end of every batch, so nothing is pending here.
                bridge.assignment = []

            def on_partitions_assigned(self, assigned):
                bridge.assignment = sorted((tp.topic, tp.partition) for tp in assigned)
                bridge._assigned_at = time.monotonic()
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
            idle_from = max(last_record or 0.0, self._assigned_at or 0.0) or None
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
        bad: list[tuple[Any, Poison]] = []
        for m in messages:
            parsed = extract(m.value, self.s.input_format, self.s.text_field, self.s.max_chars)
            if isinstance(parsed, Poison):
                bad.append((m, parsed))
            else:
                good.append((m, *parsed))
        results = classify_cached(self.model, self.cache, [text for _, text, _ in good]) if good else []

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
            topic = self.s.out if self._fixed_out else self.s.out.format(label=result["label"], topic=m.topic)
            headers = list(m.headers or []) + [(MODEL_HEADER, self._fp), (LABEL_HEADER, result["label"].encode())]
            futures.append(self.producer.send(topic, value=enrich(result, obj), key=m.key, headers=headers))
        for m, poison in bad:
            self._report_poison(m, poison, futures)

        if self.s.exactly_once:
            self._commit_transaction(offsets)
        else:
            self._flush_and_check(futures)
            self._commit(offsets)

        self.stats.consumed += len(messages)
        self.stats.produced += len(good)
        self.stats.cache_hits += hits
        self.stats.poison += len(bad)
        self.stats.dlq += len(bad) if self.s.dlq else 0
        self.stats.batches += 1
        self.stats.last_commit = time.monotonic()
        if self.metrics:
            mt = self.metrics
            mt.consumed.inc(len(messages))
            mt.produced.inc(len(good))
            mt.cache_hits.inc(hits)
            for _, poison in bad:
                mt.poison.labels(poison.kind).inc()
            if self.s.dlq:
                mt.dlq.inc(len(bad))
            mt.batch_seconds.observe(time.perf_counter() - t0)

    def _report_poison(self, m: Any, poison: Poison, futures: list) -> None:
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        if not self.s.dlq:
            self.log(f"bad record {where}: {poison.message} (skipped; --dlq TOPIC keeps such records)")
            return
        headers = list(m.headers or []) + [
            ("sentictl-error", poison.kind.encode()),
            ("sentictl-error-message", poison.message.encode()),
            ("sentictl-source-topic", m.topic.encode()),
            ("sentictl-source-partition", str(m.partition).encode()),
            ("sentictl-source-offset", str(m.offset).encode()),
        ]
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
        except _Stopped:
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
