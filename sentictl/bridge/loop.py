"""The bridge itself: connect, then poll a batch → Engine.classify → produce → flush → commit."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import console
from ..engine import BadRecord, Engine, Record
from ..engine.model import release_when_freed
from ..engine.records import OUTPUT_TOO_LARGE as TOO_LARGE
from ..errors import SentictlError
from ..kafka import TopicTemplate, connect_with_retry, make_consumer, make_producer
from . import eos
from .delivery import Delivery, Send
from .metrics import BridgeMetrics, BridgeStats
from .retry import Outage, describe, kafka_error, quiet_kafka_finalizers
from .settings import LABEL_HEADER, MODEL_HEADER, POLL_MS, BridgeSettings, check_settings, dlq_headers, enrich

# Once a batch has its first records, keep polling this long to fill it: brokers (tansu among
# them) may hand out one small record batch per fetch, and classifying a few records at a time
# wastes the engine's length-sorted batching.
LINGER_MS = 100
# While no records come, ask the broker for the assigned partitions' end offsets this often: an
# empty poll cannot tell a quiet topic from a broker that has gone away.
PROBE_S = 5.0
# kafka-python backs off reconnects up to 30 s by default; a broker back after a restart should be
# noticed within a few seconds, well inside --connect-timeout.
RECONNECT_BACKOFF_MAX_MS = 2000


class Bridge(Delivery):
    """One consumer-group member: connect(), run(timeout=, count=), close()."""

    def __init__(
        self,
        model: Any,
        cache: Any,
        settings: BridgeSettings,
        log: Callable[[str], None] | None = None,
        progress: bool = True,
        reload: Callable[[], Any] | None = None,
    ):
        """``reload``: loads (and verifies) the model folder again, for request_reload (SIGHUP)."""
        self.model = model
        self._reload = reload
        self._reload_wanted = False
        self._loader: threading.Thread | None = None
        self._loaded: Any = None
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
        # Records a rejoin poll handed over while a commit was being retried: the next batch.
        self._stash: list[Any] = []
        self._contact = time.monotonic()
        self._idle_outage = self._outage("reaching the broker while idle", "probe")
        # Refuse, before connecting, topics Kafka would reject and loops through an input topic.
        self.out: TopicTemplate = check_settings(settings, labels=self.engine.labels)
        self._fp = model.fingerprint.encode()

    def _outage(self, what: str, op: str, consequence: str = "", stoppable: bool = False) -> Outage:
        def counted() -> None:
            if self.metrics:
                self.metrics.kafka_retries.labels(op).inc()

        return Outage(
            what,
            self.s.connect_timeout,
            self.log,
            consequence=consequence,
            on_retry=counted,
            stopped=(lambda: self._stop) if stoppable else (lambda: False),
        )

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        """Create the producer and the consumer (retrying until --connect-timeout), join the group."""
        s, kafka = self.s, self.s.kafka
        deadline = time.monotonic() + s.connect_timeout

        def retry(what: str, make: Callable[[float], Any]) -> Any:
            return connect_with_retry(
                make,
                kafka,
                what=what,
                timeout=s.connect_timeout,
                deadline=deadline,
                log=self.log,
                stopped=lambda: self._stop,
                hint="; --connect-timeout waits longer",
            )

        # send() blocks this long for a topic's metadata; a short bound lets the delivery retry loop,
        # not kafka-python, decide how long a missing topic or an absent broker is waited for.
        producer_opts: dict[str, Any] = {
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "max_block_ms": int(min(max(s.connect_timeout, 1.0), 10.0) * 1000),
        }
        if s.exactly_once:
            tid = s.transactional_id or f"sentictl-{s.group}-{socket.gethostname()}-{os.getpid()}"
            producer_opts.update(transactional_id=tid, enable_idempotence=True, max_block_ms=15_000)
        self.producer = retry(
            "producer", lambda t: make_producer(kafka, **producer_opts, bootstrap_timeout_ms=int(t * 1000))
        )
        if s.exactly_once:
            eos.init_transactions(self.producer, kafka, check=s.eos_check, check_topic=s.eos_check_topic)
        consumer_opts = dict(
            group_id=s.group,
            auto_offset_reset=s.offset_reset,
            max_poll_records=s.batch_size,
            session_timeout_ms=s.session_timeout_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            heartbeat_interval_ms=max(100, min(3000, s.session_timeout_ms // 3)),
            isolation_level="read_committed" if s.exactly_once else "read_uncommitted",
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        self.consumer = retry(
            "consumer", lambda t: make_consumer(kafka, **consumer_opts, bootstrap_timeout_ms=int(t * 1000))
        )
        self.consumer.subscribe(s.inputs, listener=self._listener())
        if s.metrics_port:
            self.metrics = BridgeMetrics(s.metrics_host, s.metrics_port)
            if self.cache is not None:
                metrics = self.metrics
                self.cache.on_failure = lambda op: metrics.cache_failures.labels(op).inc()
            self.metrics.show_model(self.model)
            self.log(f"metrics on http://{s.metrics_host}:{s.metrics_port}/metrics")
        mode = "exactly-once" if s.exactly_once else "at-least-once"
        self.log(
            f"{', '.join(s.inputs)} → {s.out} via {kafka.describe()}, group {s.group}, "
            f"{mode}, model {self.model.name} ({self.model.fingerprint})"
        )

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        bridge = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Offsets are committed at the end of every batch, so nothing is pending here; stashed
                # records of a revoked partition are its new owner's to re-deliver.
                bridge.assignment = []
                gone = {(tp.topic, tp.partition) for tp in revoked}
                bridge._stash = [m for m in bridge._stash if (m.topic, m.partition) not in gone]

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

    # -- reloading the model ----------------------------------------------------------------

    def request_reload(self) -> None:
        """Load the model folder again beside the running model, and switch between two batches (safe
        from a signal handler: it only sets a flag the loop reads)."""
        self._reload_wanted = True

    def _check_reload(self) -> None:
        """Between batches: start a requested reload in the background, or switch to a model it loaded.

        The batch in hand always finishes on the model it started on; its records carry that model's
        fingerprint (the sentictl-model header). A folder that fails leaves the running model classifying.
        """
        if self._reload_wanted and self._loader is None and self._reload is not None:
            self._reload_wanted = False
            self.log(f"SIGHUP: loading the model folder again beside {self.model.name} ({self.model.fingerprint})")
            self._loader = threading.Thread(target=self._load_new, name="sentictl-reload", daemon=True)
            self._loader.start()
        if self._loader is None or self._loader.is_alive():
            return
        self._loader = None
        loaded, self._loaded = self._loaded, None
        old = self.model
        if not isinstance(loaded, BaseException):
            try:
                engine = Engine(loaded, self.cache, max_chars=self.s.max_chars)
                out = check_settings(self.s, labels=engine.labels)  # the topic templates against its labels
            except Exception as exc:  # noqa: BLE001 - reported as a failed reload like a load error
                loaded = exc
        if isinstance(loaded, BaseException):
            message = str(loaded) if isinstance(loaded, SentictlError) else f"{type(loaded).__name__}: {loaded}"
            if self.metrics:
                self.metrics.reload_failures.inc()
            self.log(f"reload failed, still classifying with {old.name} ({old.fingerprint}): {message}")
            return
        self.model, self.engine, self.out, self._fp = loaded, engine, out, loaded.fingerprint.encode()
        release_when_freed(old)
        if self.metrics:
            self.metrics.show_model(loaded, previous=old)
            self.metrics.reloads.inc()
        self.log(f"reloaded: {loaded.name} {old.fingerprint} → {loaded.fingerprint}")

    def _load_new(self) -> None:
        try:
            self._loaded = self._reload()  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            self._loaded = exc

    def run(self, timeout: float | None = None, count: int | None = None) -> BridgeStats:
        """Process batches until stop(), `timeout` seconds, `count` consumed records or --idle-timeout."""
        if self.consumer is None:
            self.connect()
        count = count if count is not None else self.s.max_messages
        started = time.monotonic()
        last_record = None
        last_progress, progress_count = time.monotonic(), self.stats.consumed
        while not self._stop:
            self._check_reload()
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
                last_record = self._contact = time.monotonic()
                self._idle_outage.recovered()
            elif time.monotonic() - self._contact >= PROBE_S:
                self._probe()
            if self.progress and time.monotonic() - last_progress >= self.s.progress_interval:
                elapsed = time.monotonic() - last_progress
                self._update_lag()
                self.log(self.stats.line((self.stats.consumed - progress_count) / elapsed))
                last_progress, progress_count = time.monotonic(), self.stats.consumed
        return self.stats

    def _collect(self, limit: int) -> list[Any]:
        """Up to ``limit`` records: wait up to POLL_MS for the first, then LINGER_MS for more."""
        if self._stash:
            messages, self._stash = self._stash[:limit], self._stash[limit:]
            return messages
        messages = self._poll(POLL_MS, limit, retry=True)
        deadline = time.monotonic() + LINGER_MS / 1000
        while messages and len(messages) < limit and not self._stop:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # No retry with records in hand: they are processed now, and a failure comes back next poll.
            more = self._poll(int(left * 1000) + 1, limit - len(messages), retry=False)
            if not more:
                break
            messages += more
        return messages

    def _poll(self, timeout_ms: int, limit: int, retry: bool) -> list[Any]:
        """The records of one poll; a failing poll is retried (nothing is in hand) until --connect-timeout."""
        outage = self._outage(
            "polling for records", "poll", "every record delivered so far is committed; a restart resumes there"
        )
        while True:
            try:
                polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=limit)
            except Exception as exc:
                if not kafka_error(exc):
                    raise
                if not retry:
                    return []
                outage.failed(exc)
                if self._stop:
                    return []
                continue
            outage.recovered()
            return [m for batch in polled.values() for m in batch]

    def _probe(self) -> None:
        """Ask the broker something cheap while idle, so that a broker gone for good ends the run."""
        partitions = list(self.consumer.assignment())
        if not partitions:
            # Nothing assigned (joining, or more members than partitions): no partition to ask about.
            self._contact = time.monotonic()
            return
        started = time.monotonic()
        try:
            self.consumer.end_offsets(
                partitions, timeout_ms=int(max(0.5, min(5.0, self._idle_outage.remaining())) * 1000)
            )
        except Exception as exc:
            if not kafka_error(exc):
                raise
            self._idle_outage.failed(exc, since=started)
            return
        self._idle_outage.recovered()
        self._contact = time.monotonic()

    def _update_lag(self) -> None:
        lag, known = 0, False
        for tp in self.consumer.assignment():
            try:
                high = self.consumer.highwater(tp)
                if high is None:
                    continue
                lag += max(0, high - self.consumer.position(tp, timeout_ms=100))
                known = True
            except Exception:  # a position not yet known is not worth failing the progress line
                continue
        self.stats.lag = lag if known else None
        if self.metrics and known:
            self.metrics.lag.set(lag)

    def _process(self, messages: list[Any]) -> None:
        from kafka.structs import OffsetAndMetadata

        from kafka import TopicPartition

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
        # A record the model fails on (ONNX Runtime raised) is found by halving the batch and goes to the
        # DLQ as inference_error; retrying the whole batch would fail on it for ever.
        outcomes = self.engine.classify_each([text for _, text, _ in good]) if good else []
        results: list[Any] = []
        scored: list[tuple[Any, str, Any]] = []
        for entry, outcome in zip(good, outcomes):
            if isinstance(outcome, BadRecord):
                m = entry[0]
                bad.append((m, BadRecord(outcome.reason, outcome.message, m.topic, m.offset)))
            else:
                scored.append(entry)
                results.append(outcome)
        good = scored

        offsets: dict[Any, Any] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)

        sends: list[Send] = []
        hits = 0
        for (m, _text, obj), result in zip(good, results):
            hits += bool(result.get("cache_hit"))
            topic = self.out.render(label=result["label"], topic=m.topic)
            headers = list(m.headers or []) + [(MODEL_HEADER, self._fp), (LABEL_HEADER, result["label"].encode())]
            sends.append(Send(topic, enrich(result, obj), m.key, headers, m, dead_letter=False))
        for m, poison in bad:
            dead = self._dead_letter(m, poison)
            if dead is not None:
                sends.append(dead)

        if self.s.exactly_once:
            self._commit_transaction(sends, offsets)
        else:
            # A batch is committed only once every one of its records is acknowledged: a failure
            # before that re-delivers the whole batch (at-least-once), never loses part of it.
            self._deliver(sends)
            self._commit(offsets)
        produced = sum(1 for x in sends if not x.dead_letter and not x.dropped)
        dead_letters = sum(1 for x in sends if x.dead_letter and not x.dropped)
        # Results too large to produce became bad records themselves (dead letters, or logged and dropped).
        converted = sum(1 for x in sends if x.converted)
        reasons = [b.reason for _, b in bad] + [TOO_LARGE] * converted
        self._count(messages, produced, hits, len(bad) + converted, dead_letters, reasons, time.perf_counter() - t0)

    def _dead_letter(self, m: Any, poison: BadRecord) -> Send | None:
        """The DLQ record for a bad record, or None (logged) without --dlq."""
        if not self.s.dlq:
            where = f"{m.topic}[{m.partition}]@{m.offset}"
            self.log(f"bad record {where}: {poison.message} (skipped; --dlq TOPIC keeps such records)")
            return None
        return Send(self.s.dlq, m.value, m.key, dlq_headers(m, poison.reason, poison.message), m, dead_letter=True)

    def _count(
        self,
        messages: list[Any],
        produced: int,
        hits: int,
        poison: int,
        dead_letters: int,
        reasons: list[str],
        seconds: float,
    ) -> None:
        st = self.stats
        st.consumed += len(messages)
        st.produced += produced
        st.cache_hits += hits
        st.poison += poison
        st.dlq += dead_letters
        st.batches += 1
        st.last_commit = time.monotonic()
        if self.metrics:
            mt = self.metrics
            mt.consumed.inc(len(messages))
            mt.produced.inc(produced)
            mt.cache_hits.inc(hits)
            for reason in reasons:
                mt.poison.labels(reason).inc()
            mt.dlq.inc(dead_letters)
            mt.batch_seconds.observe(seconds)

    # -- delivering and committing, through broker outages -------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Flush the producer and leave the group (never committing unprocessed records).

        Errors are logged, not raised: closing runs after the run's own outcome, which matters more.
        """
        if self.producer is not None:
            try:
                self.producer.flush(timeout=timeout)
            except Exception as exc:
                if not kafka_error(exc):
                    raise
                self.log(
                    f"closing: not every record was acknowledged ({describe(exc)}); their offsets are "
                    f"not committed, so a restart delivers them again"
                )
            finally:
                try:
                    self.producer.close(timeout=timeout)
                except Exception as exc:
                    if not kafka_error(exc):
                        raise
                    quiet_kafka_finalizers()
                self.producer = None
        if self.consumer is not None:
            try:
                # autocommit=False: the consumer's position may be past records that were never
                # processed (fetched but not returned); only _process commits.
                self.consumer.close(autocommit=False, timeout_ms=int(timeout * 1000))
            except Exception as exc:
                if not kafka_error(exc):
                    raise
            self.consumer = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
