"""The bridge itself: connect, then poll a batch → Engine.classify → produce → flush → commit."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import console
from ..engine import BadRecord, Engine, Record
from ..engine.records import OUTPUT_TOO_LARGE as TOO_LARGE
from ..errors import BridgeError
from ..kafka import (
    ConnectStopped,
    TopicTemplate,
    connect_with_retry,
    make_consumer,
    make_producer,
)
from . import eos
from .metrics import BridgeMetrics, BridgeStats
from .retry import Outage, describe, kafka_error
from .settings import (
    LABEL_HEADER,
    MODEL_HEADER,
    BridgeSettings,
    check_settings,
    dlq_headers,
    enrich,
)

# How long one poll blocks: short enough that a signal or a stop condition is noticed quickly.
POLL_MS = 500
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


@dataclass
class _Send:
    """One record to produce for a consumed message: a result or a dead letter, and how it went."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list
    message: Any
    dead_letter: bool
    future: Any = None
    # A result too large for the broker, turned into a dead letter (or dropped without --dlq).
    converted: bool = False
    dropped: bool = False


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

        return Outage(what, self.s.connect_timeout, self.log, consequence=consequence, on_retry=counted,
                      stopped=(lambda: self._stop) if stoppable else (lambda: False))

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        """Create the producer and the consumer (retrying until --connect-timeout), join the group."""
        s, kafka = self.s, self.s.kafka
        deadline = time.monotonic() + s.connect_timeout

        def retry(what: str, make: Callable[[float], Any]) -> Any:
            return connect_with_retry(make, kafka, what=what, timeout=s.connect_timeout, deadline=deadline,
                                      log=self.log, stopped=lambda: self._stop,
                                      hint="; --connect-timeout waits longer")

        # send() blocks this long for a topic's metadata; a short bound lets the delivery retry loop,
        # not kafka-python, decide how long a missing topic or an absent broker is waited for.
        producer_opts: dict[str, Any] = {"reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
                                         "max_block_ms": int(min(max(s.connect_timeout, 1.0), 10.0) * 1000)}
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
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
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
        outage = self._outage("polling for records", "poll",
                              "every record delivered so far is committed; a restart resumes there")
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
            self.consumer.end_offsets(partitions, timeout_ms=int(max(0.5, min(5.0, self._idle_outage.remaining())) * 1000))
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

        sends: list[_Send] = []
        hits = 0
        for (m, _text, obj), result in zip(good, results):
            hits += bool(result.get("cache_hit"))
            topic = self.out.render(label=result["label"], topic=m.topic)
            headers = list(m.headers or []) + [(MODEL_HEADER, self._fp), (LABEL_HEADER, result["label"].encode())]
            sends.append(_Send(topic, enrich(result, obj), m.key, headers, m, dead_letter=False))
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

    def _dead_letter(self, m: Any, poison: BadRecord) -> _Send | None:
        """The DLQ record for a bad record, or None (logged) without --dlq."""
        if not self.s.dlq:
            where = f"{m.topic}[{m.partition}]@{m.offset}"
            self.log(f"bad record {where}: {poison.message} (skipped; --dlq TOPIC keeps such records)")
            return None
        return _Send(self.s.dlq, m.value, m.key, dlq_headers(m, poison.reason, poison.message), m, dead_letter=True)

    def _count(self, messages: list[Any], produced: int, hits: int, poison: int, dead_letters: int,
               reasons: list[str], seconds: float) -> None:
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

    def _deliver(self, sends: list[_Send]) -> None:
        """Produce every record and wait until each is acknowledged, re-sending what failed.

        Retries run until --connect-timeout after the first failure; then BrokerLost, with the
        batch's offsets uncommitted so that a restart re-delivers it. A record that failed may
        have been written anyway, so a re-send can duplicate it: at-least-once, bounded by the batch.
        """
        from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

        outage = self._outage("delivering a batch", "deliver", stoppable=True, consequence=(
            "its offsets were not committed, so a restart re-processes that batch (at-least-once)"))
        waiting = list(sends)
        while waiting:
            last: BaseException | None = None
            for snd in waiting:
                if snd.future is not None or snd.dropped:
                    continue
                try:
                    snd.future = self.producer.send(snd.topic, value=snd.value, key=snd.key, headers=snd.headers)
                except MessageSizeTooLargeError as exc:
                    self._too_large(snd, exc)
                except Exception as exc:
                    if not kafka_error(exc):
                        raise
                    last = exc
            started = time.monotonic()
            try:
                self.producer.flush(timeout=max(0.5, outage.remaining()))
            except Exception as exc:
                if not kafka_error(exc):
                    raise
                last = exc  # KafkaTimeoutError: some records are still on their way
            still = []
            for snd in waiting:
                f = snd.future
                if snd.dropped or (f is not None and f.succeeded()):
                    continue
                if f is not None and f.failed():
                    if isinstance(f.exception, MessageSizeTooLargeError):
                        self._too_large(snd, f.exception)
                        if snd.dropped:
                            continue
                    else:
                        last = f.exception
                        snd.future = None  # sent again next round
                # Unfinished futures are waited on, not re-sent: the producer is still retrying them.
                still.append(snd)
            waiting = still
            if waiting and last is None and all(x.future is not None for x in waiting):
                last = KafkaTimeoutError(f"{len(waiting)} records not acknowledged after a flush")
            if waiting and last is not None:
                outage.failed(last, since=started)
        outage.recovered()

    def _too_large(self, snd: _Send, exc: BaseException) -> None:
        """A record the broker will never take: a result goes to the DLQ instead; a dead letter is logged."""
        m = snd.message
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        if not snd.dead_letter and self.s.dlq:
            reason = f"the result record is larger than the broker or producer accepts ({describe(exc)})"
            snd.topic, snd.value, snd.headers = self.s.dlq, m.value, dlq_headers(m, TOO_LARGE, reason)
            snd.dead_letter, snd.converted, snd.future = True, True, None
            return
        if not snd.dead_letter:
            snd.converted = True
        snd.dropped = True
        what = "its dead letter" if snd.dead_letter else "its result"
        self.log(f"bad record {where}: {what} is too large to produce ({describe(exc)}); skipped"
                 + ("" if self.s.dlq else " (--dlq TOPIC keeps such records)"))

    def _commit(self, offsets: dict) -> None:
        """Commit the batch's offsets, retrying through outages and rejoining after a rebalance."""
        from kafka.errors import (
            CommitFailedError,
            IllegalGenerationError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        )
        from kafka.structs import MemberState

        moved = (CommitFailedError, RebalanceInProgressError, UnknownMemberIdError, IllegalGenerationError)
        outage = self._outage("committing offsets", "commit", stoppable=True, consequence=(
            "the batch was delivered but its offsets were not committed, so a restart delivers it again"))
        while offsets:
            started = time.monotonic()
            try:
                self.consumer.commit(offsets, timeout_ms=int(max(0.5, outage.remaining()) * 1000))
            except moved as exc:
                # The group rebalanced while the batch was in flight. Rejoin, then commit what is
                # still ours; a partition that moved is re-delivered by its new owner (duplicates
                # bounded by the batch, which at-least-once allows).
                error: BaseException = exc
                try:
                    self._rejoin()
                except Exception as rejoin_exc:
                    if not kafka_error(rejoin_exc):
                        raise
                    error = rejoin_exc
                if self.consumer.group_metadata().state == MemberState.STABLE:
                    mine = self.consumer.assignment()
                    moved_away = [tp for tp in offsets if tp not in mine]
                    if moved_away:
                        shown = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in moved_away)
                        self.log(f"offsets of {shown} not committed: the partition moved to another member "
                                 f"during a rebalance, which re-delivers that part of the batch")
                        offsets = {tp: o for tp, o in offsets.items() if tp in mine}
                    if not offsets:
                        break
                outage.failed(error, since=started)
                continue
            except Exception as exc:
                if not kafka_error(exc):
                    raise
                outage.failed(exc, since=started)
                continue
            self.stats.commits += 1
            if self.metrics:
                self.metrics.commits.inc()
            break
        outage.recovered()

    def _rejoin(self) -> None:
        """Let the consumer rejoin its group; records it hands over meanwhile are kept for the next batch."""
        held = list(self.consumer.assignment())
        # Paused, the partitions already held return nothing: their next records stay in order.
        if held:
            self.consumer.pause(*held)
        try:
            polled = self.consumer.poll(timeout_ms=POLL_MS)
        finally:
            mine = self.consumer.assignment()
            back = [tp for tp in held if tp in mine]
            if back:
                self.consumer.resume(*back)
        self._stash += [m for batch in polled.values() for m in batch]

    def _commit_transaction(self, sends: list[_Send], offsets: dict) -> None:
        try:
            self.producer.begin_transaction()
            for snd in sends:
                snd.future = self.producer.send(snd.topic, value=snd.value, key=snd.key, headers=snd.headers)
            self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
            self.stats.commits += 1
            if self.metrics:
                self.metrics.commits.inc()
        except Exception as exc:
            if not kafka_error(exc):
                raise
            try:
                self.producer.abort_transaction()
            except Exception:  # the abort is best effort: an unfinished transaction is aborted by the broker
                pass
            raise BridgeError(
                f"the transaction for a batch failed ({describe(exc)}) and was aborted; nothing of it is visible "
                f"to read_committed consumers and a restart re-processes it") from None

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
                self.log(f"closing: not every record was acknowledged ({describe(exc)}); their offsets are "
                         f"not committed, so a restart delivers them again")
            finally:
                try:
                    self.producer.close(timeout=timeout)
                except Exception as exc:
                    if not kafka_error(exc):
                        raise
                    _quiet_kafka_finalizers()
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


def _quiet_kafka_finalizers() -> None:
    """Drop the traceback kafka-python's finalizers print for a close that already failed here.

    KafkaProducer.close() raises on records it could not flush before marking itself closed, so its
    __del__ closes again, fails again and prints "Exception ignored ... Traceback" at exit, after
    the bridge has reported the same failure in one line. Other unraisable errors still show.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_sentictl", False):
        return

    def hook(unraisable: Any) -> None:
        owner = getattr(unraisable.object, "__qualname__", "")
        if kafka_error(unraisable.exc_value) and owner.startswith("Kafka") and owner.endswith("__del__"):
            return
        previous(unraisable)

    hook._sentictl = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


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
    lost = False
    try:
        try:
            bridge.connect()
        except ConnectStopped:
            bridge.log("stopped before connecting: nothing consumed")
            return bridge.stats
        try:
            stats = bridge.run()
        except BridgeError:
            lost = True
            raise
        except Exception as exc:
            if not kafka_error(exc):
                raise
            # A Kafka error no retry above expected: still one line, and still nothing uncommitted lost.
            lost = True
            raise BridgeError(f"Kafka error: {describe(exc)}; the batch in hand was not committed, so a restart "
                              f"re-processes it") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # After an outage the broker is likely still away: do not hold the exit for long.
        bridge.close(timeout=2.0 if lost else 10.0)
    busy = stats.busy_rate()
    busy_text = f", {busy:,.1f} texts/s from first record to last commit" if busy else ""
    bridge.log(f"done: {stats.line()} in {time.monotonic() - stats.started:.1f} s{busy_text}")
    return stats
