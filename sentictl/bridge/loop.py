"""The bridge itself: connect, then poll a batch → Engine.classify → produce → flush → commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import console
from ..engine import Engine
from ..engine.memory import release_when_freed
from ..engine.records import OUTPUT_TOO_LARGE as TOO_LARGE
from ..errors import SentictlError
from ..kafka import TopicTemplate
from . import eos
from .classify import classify_batch
from .clients import Connector, Consumer, Message, Producer
from .delivery import Checkpoint
from .metrics import BridgeMetrics, BridgeStats
from .reload import Reloader
from .retry import Outage, describe, kafka_errors, quiet_kafka_finalizers
from .settings import LABEL_HEADER, MODEL_HEADER, POLL_MS, BridgeSettings, check_settings, enrich

# Once a batch has its first records, keep polling this long to fill it: brokers (tansu among
# them) may hand out one small record batch per fetch, and classifying a few records at a time
# wastes the engine's length-sorted batching.
LINGER_MS = 100
# While no records come, ask the broker for the assigned partitions' end offsets this often: an
# empty poll cannot tell a quiet topic from a broker that has gone away.
PROBE_S = 5.0


class Bridge:
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
        self._reloader = Reloader(reload) if reload is not None else None
        self.cache = cache
        self.engine = Engine(model, cache, max_chars=settings.max_chars)
        self.s = settings
        self.log = log or (lambda msg: console.line(f"sentictl bridge: {msg}"))
        self.progress = progress
        self.stats = BridgeStats()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.metrics: BridgeMetrics | None = None
        self.assignment: list[tuple[str, int]] = []
        self.assigned_at: float | None = None
        self._stop = False
        # Records a rejoin poll handed over while a commit was being retried: the next batch.
        self._stash: list[Message] = []
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
        connector = Connector(s, time.monotonic() + s.connect_timeout, self.log, stopped=lambda: self._stop)
        # Each client is the bridge's as soon as it exists, so that close() closes it whatever fails next.
        self.producer = connector.producer()
        if s.exactly_once:
            eos.init_transactions(self.producer, kafka, check=s.eos_check, check_topic=s.eos_check_topic)
        self.consumer = connector.consumer()
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

        # kafka-python wants a subclass of its (untyped) listener class.
        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: list[Any]) -> None:
                # Offsets are committed at the end of every batch, so nothing is pending here; stashed
                # records of a revoked partition are its new owner's to re-deliver.
                bridge.assignment = []
                gone = {(tp.topic, tp.partition) for tp in revoked}
                bridge._stash = [m for m in bridge._stash if (m.topic, m.partition) not in gone]

            def on_partitions_assigned(self, assigned: list[Any]) -> None:
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
        if self._reloader is not None:
            self._reloader.request()

    def _check_reload(self) -> None:
        """Between batches: start a requested reload in the background, or switch to a model it loaded."""
        if self._reloader is None:
            return
        if self._reloader.start():
            self.log(f"SIGHUP: loading the model folder again beside {self.model.name} ({self.model.fingerprint})")
        if self._reloader.ready():
            self._switch(self._reloader.take())

    def _switch(self, loaded: Any) -> None:
        """Classify with the model a reload loaded (or report why it cannot, ``loaded`` being an exception).

        The batch in hand always finishes on the model it started on; its records carry that model's
        fingerprint (the sentictl-model header). A folder that fails leaves the running model classifying.
        """
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

    def _clients(self) -> tuple[Producer, Consumer]:
        """The producer and the consumer connect() made."""
        if self.producer is None or self.consumer is None:
            raise RuntimeError("the bridge is not connected: connect() first")
        return self.producer, self.consumer

    def _collect(self, limit: int) -> list[Message]:
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

    def _poll(self, timeout_ms: int, limit: int, retry: bool) -> list[Message]:
        """The records of one poll; a failing poll is retried (nothing is in hand) until --connect-timeout."""
        _, consumer = self._clients()
        outage = self._outage(
            "polling for records", "poll", "every record delivered so far is committed; a restart resumes there"
        )
        while True:
            with kafka_errors() as attempt:
                polled = consumer.poll(timeout_ms=timeout_ms, max_records=limit)
            if attempt.error is None:
                outage.recovered()
                return [m for batch in polled.values() for m in batch]
            if not retry:
                return []
            outage.failed(attempt.error)
            if self._stop:
                return []

    def _probe(self) -> None:
        """Ask the broker something cheap while idle, so that a broker gone for good ends the run."""
        _, consumer = self._clients()
        partitions = list(consumer.assignment())
        if not partitions:
            # Nothing assigned (joining, or more members than partitions): no partition to ask about.
            self._contact = time.monotonic()
            return
        started = time.monotonic()
        with kafka_errors() as attempt:
            timeout_s = max(0.5, min(5.0, self._idle_outage.remaining()))
            consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
        if attempt.error is not None:
            self._idle_outage.failed(attempt.error, since=started)
            return
        self._idle_outage.recovered()
        self._contact = time.monotonic()

    def _update_lag(self) -> None:
        _, consumer = self._clients()
        lag, known = 0, False
        for tp in consumer.assignment():
            try:
                high = consumer.highwater(tp)
                if high is None:
                    continue
                lag += max(0, high - consumer.position(tp, timeout_ms=100))
                known = True
            except Exception:  # a position not yet known is not worth failing the progress line
                continue
        self.stats.lag = lag if known else None
        if self.metrics and known:
            self.metrics.lag.set(lag)

    # -- one batch --------------------------------------------------------------------------

    def _checkpoint(self) -> Checkpoint:
        """A checkpoint for the next batch, told what delivering and committing need of the bridge."""
        producer, consumer = self._clients()

        def outage(what: str, op: str, consequence: str) -> Outage:
            return self._outage(what, op, consequence, stoppable=True)

        def hold(records: list[Message]) -> None:
            self._stash += records

        return Checkpoint(producer, consumer, self.s.dlq, self.log, outage, hold, transactional=self.s.exactly_once)

    def _process(self, messages: list[Message]) -> None:
        """Classify a batch, produce its results and dead letters, commit it, count it."""
        t0 = time.perf_counter()
        if self.stats.first_record is None:
            self.stats.first_record = time.monotonic()
        scored, bad = classify_batch(
            self.engine, messages, self.s.text_field if self.s.input_format == "json" else None
        )
        batch = self._checkpoint()
        batch.consumed(messages)
        hits = 0
        for m, obj, result in scored:
            hits += bool(result.get("cache_hit"))
            topic = self.out.render(label=result["label"], topic=m.topic)
            headers = list(m.headers or []) + [(MODEL_HEADER, self._fp), (LABEL_HEADER, result["label"].encode())]
            batch.result(topic, enrich(result, obj), m, headers)
        for m, poison in bad:
            batch.dead_letter(m, poison)
        if batch.commit():
            self.stats.commits += 1
            if self.metrics:
                self.metrics.commits.inc()
        # Results too large to produce became bad records themselves (dead letters, or logged and dropped).
        reasons = [b.reason for _, b in bad] + [TOO_LARGE] * batch.converted
        bad_count = len(bad) + batch.converted
        self._count(messages, batch.produced, hits, bad_count, batch.dead_letters, reasons, time.perf_counter() - t0)

    def _count(
        self,
        messages: list[Message],
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

    # -- closing ------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Flush the producer and leave the group (never committing unprocessed records).

        Errors are logged, not raised: closing runs after the run's own outcome, which matters more.
        """
        if self.producer is not None:
            try:
                with kafka_errors() as flushed:
                    self.producer.flush(timeout=timeout)
                if flushed.error is not None:
                    self.log(
                        f"closing: not every record was acknowledged ({describe(flushed.error)}); their offsets "
                        f"are not committed, so a restart delivers them again"
                    )
            finally:
                with kafka_errors() as closed:
                    self.producer.close(timeout=timeout)
                if closed.error is not None:
                    quiet_kafka_finalizers()
                self.producer = None
        if self.consumer is not None:
            # autocommit=False: the consumer's position may be past records that were never
            # processed (fetched but not returned); only a Checkpoint commits.
            with kafka_errors():
                self.consumer.close(autocommit=False, timeout_ms=int(timeout * 1000))
            self.consumer = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
