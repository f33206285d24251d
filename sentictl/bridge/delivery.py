"""Delivery and commit of one batch: every send acknowledged before the batch's offsets are committed.

A :class:`Checkpoint` (after quix-streams' own) is made by the bridge for each batch. It is told
the clients, the dead-letter topic and how to log and keep time through outages; it collects the
records to produce (results and dead letters) and the offsets the batch may commit, then
produces, flushes and commits them, retrying through broker outages, or does all of it in one
transaction with --exactly-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..engine import BadRecord
from ..engine.records import OUTPUT_TOO_LARGE as TOO_LARGE
from ..errors import BridgeError
from .clients import Consumer, Future, Headers, Message, Offsets, Producer
from .retry import Outage, describe, kafka_errors
from .settings import POLL_MS, dlq_headers

# A stoppable Outage for (what failed, its metrics label, what failing for good means for the batch).
OutageFactory = Callable[[str, str, str], Outage]


@dataclass
class Send:
    """One record to produce for a consumed message: a result or a dead letter, and how it went."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    message: Message
    dead_letter: bool
    future: Future | None = None
    # A result too large for the broker, turned into a dead letter (or dropped without --dlq).
    converted: bool = False
    dropped: bool = False


@dataclass
class Checkpoint:
    """One batch on its way out: what it produces, what it may commit, and doing both through outages."""

    producer: Producer
    consumer: Consumer
    dlq: str | None
    log: Callable[[str], None]
    outage: OutageFactory
    # Records a rejoin poll hands over while a commit is retried: the bridge's next batch.
    hold: Callable[[list[Message]], None]
    # --exactly-once: the records and the offsets in one transaction.
    transactional: bool = False
    sends: list[Send] = field(default_factory=list)
    offsets: Offsets = field(default_factory=dict)

    # -- what the batch produces and commits ------------------------------------------------

    def consumed(self, messages: Iterable[Message]) -> None:
        """Note consumed records: each partition's offset after its last record becomes committable."""
        from kafka.structs import OffsetAndMetadata

        from kafka import TopicPartition

        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in self.offsets or self.offsets[tp].offset <= m.offset:
                self.offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)

    def result(self, topic: str, value: bytes, m: Message, headers: Headers) -> None:
        """A result record for ``m``, keeping its key."""
        self.sends.append(Send(topic, value, m.key, headers, m, dead_letter=False))

    def dead_letter(self, m: Message, poison: BadRecord) -> None:
        """The DLQ record for a bad record; without --dlq it is logged and skipped."""
        if not self.dlq:
            where = f"{m.topic}[{m.partition}]@{m.offset}"
            self.log(f"bad record {where}: {poison.message} (skipped; --dlq TOPIC keeps such records)")
            return
        headers = dlq_headers(m, poison.reason, poison.message)
        self.sends.append(Send(self.dlq, m.value, m.key, headers, m, dead_letter=True))

    @property
    def produced(self) -> int:
        """Results delivered."""
        return sum(1 for x in self.sends if not x.dead_letter and not x.dropped)

    @property
    def dead_letters(self) -> int:
        """Dead letters delivered."""
        return sum(1 for x in self.sends if x.dead_letter and not x.dropped)

    @property
    def converted(self) -> int:
        """Results too large to produce, which became bad records themselves (dead letters, or dropped)."""
        return sum(1 for x in self.sends if x.converted)

    def commit(self) -> bool:
        """Produce every record, then commit the offsets; True when they were committed.

        At-least-once, the offsets are committed only once every record is acknowledged: a failure
        before that re-delivers the whole batch, never loses part of it. Transactional, records and
        offsets are committed together, or the transaction is aborted (BridgeError).
        """
        if self.transactional:
            self._commit_transaction()
            return True
        self._deliver()
        return self._commit_offsets()

    # -- at-least-once: deliver, then commit ---------------------------------------------------

    def _send(self, snd: Send) -> BaseException | None:
        """Send one record; a broker's refusal of its size converts or drops it, other Kafka errors are returned."""
        from kafka.errors import MessageSizeTooLargeError

        with kafka_errors() as attempt:
            snd.future = self.producer.send(snd.topic, value=snd.value, key=snd.key, headers=snd.headers)
        if isinstance(attempt.error, MessageSizeTooLargeError):
            self._too_large(snd, attempt.error)
            return None
        return attempt.error

    def _deliver(self) -> None:
        """Produce every record and wait until each is acknowledged, re-sending what failed.

        Retries run until --connect-timeout after the first failure; then BrokerLost, with the
        batch's offsets uncommitted so that a restart re-delivers it. A record that failed may
        have been written anyway, so a re-send can duplicate it: at-least-once, bounded by the batch.
        """
        from kafka.errors import KafkaTimeoutError

        outage = self.outage(
            "delivering a batch",
            "deliver",
            "its offsets were not committed, so a restart re-processes that batch (at-least-once)",
        )
        waiting = list(self.sends)
        while waiting:
            last: BaseException | None = None
            for snd in waiting:
                if snd.future is None and not snd.dropped:
                    last = self._send(snd) or last
            started = time.monotonic()
            with kafka_errors() as flush:
                self.producer.flush(timeout=max(0.5, outage.remaining()))
            last = flush.error or last  # KafkaTimeoutError: some records are still on their way
            waiting, failed = self._unacknowledged(waiting)
            last = failed or last
            if waiting and last is None and all(x.future is not None for x in waiting):
                last = KafkaTimeoutError(f"{len(waiting)} records not acknowledged after a flush")
            if waiting and last is not None:
                outage.failed(last, since=started)
        outage.recovered()

    def _unacknowledged(self, waiting: list[Send]) -> tuple[list[Send], BaseException | None]:
        """The sends still to wait for or to send again after a flush, and the last error among them."""
        from kafka.errors import MessageSizeTooLargeError

        still, last = [], None
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
        return still, last

    def _too_large(self, snd: Send, exc: BaseException) -> None:
        """A record the broker will never take: a result goes to the DLQ instead; a dead letter is logged."""
        m = snd.message
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        if not snd.dead_letter and self.dlq:
            reason = f"the result record is larger than the broker or producer accepts ({describe(exc)})"
            snd.topic, snd.value, snd.headers = self.dlq, m.value, dlq_headers(m, TOO_LARGE, reason)
            snd.dead_letter, snd.converted, snd.future = True, True, None
            return
        if not snd.dead_letter:
            snd.converted = True
        snd.dropped = True
        what = "its dead letter" if snd.dead_letter else "its result"
        self.log(
            f"bad record {where}: {what} is too large to produce ({describe(exc)}); skipped"
            + ("" if self.dlq else " (--dlq TOPIC keeps such records)")
        )

    def _commit_offsets(self) -> bool:
        """Commit the batch's offsets, retrying through outages and rejoining after a rebalance."""
        from kafka.errors import (
            CommitFailedError,
            IllegalGenerationError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        )

        moved = (CommitFailedError, RebalanceInProgressError, UnknownMemberIdError, IllegalGenerationError)
        outage = self.outage(
            "committing offsets",
            "commit",
            "the batch was delivered but its offsets were not committed, so a restart delivers it again",
        )
        committed = False
        while self.offsets:
            started = time.monotonic()
            with kafka_errors() as attempt:
                self.consumer.commit(self.offsets, timeout_ms=int(max(0.5, outage.remaining()) * 1000))
            error = attempt.error
            if error is None:
                committed = True
                break
            if isinstance(error, moved):
                # The group rebalanced while the batch was in flight. Rejoin, then commit what is
                # still ours; a partition that moved is re-delivered by its new owner (duplicates
                # bounded by the batch, which at-least-once allows).
                with kafka_errors() as rejoin:
                    self._rejoin()
                error = rejoin.error or error
                if self._settled() and not self.offsets:
                    break
            outage.failed(error, since=started)
        outage.recovered()
        return committed

    def _rejoin(self) -> None:
        """Let the consumer rejoin its group; records it hands over meanwhile are held for the next batch."""
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
        self.hold([m for batch in polled.values() for m in batch])

    def _settled(self) -> bool:
        """After a rejoin: True once the group is stable, with the offsets of partitions that moved away dropped."""
        from kafka.structs import MemberState

        if self.consumer.group_metadata().state != MemberState.STABLE:
            return False
        mine = self.consumer.assignment()
        moved_away = [tp for tp in self.offsets if tp not in mine]
        if moved_away:
            shown = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in moved_away)
            self.log(
                f"offsets of {shown} not committed: the partition moved to another member "
                f"during a rebalance, which re-delivers that part of the batch"
            )
            self.offsets = {tp: o for tp, o in self.offsets.items() if tp in mine}
        return True

    # -- exactly-once: one transaction ---------------------------------------------------------

    def _commit_transaction(self) -> None:
        """Produce the batch and commit its offsets in one transaction; a failure aborts it (BridgeError)."""
        with kafka_errors() as attempt:
            self.producer.begin_transaction()
            for snd in self.sends:
                snd.future = self.producer.send(snd.topic, value=snd.value, key=snd.key, headers=snd.headers)
            self.producer.send_offsets_to_transaction(self.offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
        if attempt.error is None:
            return
        try:
            self.producer.abort_transaction()
        except Exception:  # the abort is best effort: an unfinished transaction is aborted by the broker
            pass
        raise BridgeError(
            f"the transaction for a batch failed ({describe(attempt.error)}) and was aborted; nothing of it is "
            f"visible to read_committed consumers and a restart re-processes it"
        ) from None
