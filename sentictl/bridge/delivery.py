"""Delivery and commit for the bridge: every send acknowledged before its batch is committed.

A mixin of Bridge (loop.py): the retry policy around producing, flushing and committing, kept
apart from polling and classifying so each stays readable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..engine.records import OUTPUT_TOO_LARGE as TOO_LARGE
from ..errors import BridgeError
from .retry import describe, kafka_error
from .settings import POLL_MS, dlq_headers


@dataclass
class Send:
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


class Delivery:
    """Producing, flushing and committing a batch (mixed into Bridge, which provides its state)."""

    def _deliver(self, sends: list[Send]) -> None:
        """Produce every record and wait until each is acknowledged, re-sending what failed.

        Retries run until --connect-timeout after the first failure; then BrokerLost, with the
        batch's offsets uncommitted so that a restart re-delivers it. A record that failed may
        have been written anyway, so a re-send can duplicate it: at-least-once, bounded by the batch.
        """
        from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

        outage = self._outage(
            "delivering a batch",
            "deliver",
            stoppable=True,
            consequence=("its offsets were not committed, so a restart re-processes that batch (at-least-once)"),
        )
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

    def _too_large(self, snd: Send, exc: BaseException) -> None:
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
        self.log(
            f"bad record {where}: {what} is too large to produce ({describe(exc)}); skipped"
            + ("" if self.s.dlq else " (--dlq TOPIC keeps such records)")
        )

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
        outage = self._outage(
            "committing offsets",
            "commit",
            stoppable=True,
            consequence=("the batch was delivered but its offsets were not committed, so a restart delivers it again"),
        )
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
                        self.log(
                            f"offsets of {shown} not committed: the partition moved to another member "
                            f"during a rebalance, which re-delivers that part of the batch"
                        )
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

    def _commit_transaction(self, sends: list[Send], offsets: dict) -> None:
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
                f"to read_committed consumers and a restart re-processes it"
            ) from None
