"""The bridge's Kafka clients: what it calls of them (declared, kafka-python ships no types) and how they are made."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

from ..kafka import connect_with_retry, make_consumer, make_producer
from .settings import BridgeSettings

# kafka-python backs off reconnects up to 30 s by default; a broker back after a restart should be
# noticed within a few seconds, well inside --connect-timeout.
RECONNECT_BACKOFF_MAX_MS = 2000

# kafka-python's TopicPartition and OffsetAndMetadata (untyped namedtuples).
Partition = Any
Offsets = dict[Partition, Any]
Headers = list[tuple[str, bytes]]


class Message(Protocol):
    """A consumed record (kafka-python's ConsumerRecord)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None


class Future(Protocol):
    """A send's outcome (kafka-python's FutureRecordMetadata)."""

    exception: BaseException | None

    def succeeded(self) -> bool: ...

    def failed(self) -> bool: ...


class Producer(Protocol):
    """The KafkaProducer calls the bridge makes."""

    def send(
        self, topic: str, value: bytes | None = ..., key: bytes | None = ..., headers: Headers | None = ...
    ) -> Future: ...

    def flush(self, timeout: float | None = ...) -> None: ...

    def close(self, timeout: float | None = ...) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(self, offsets: Offsets, consumer_group_metadata: Any) -> None: ...

    def commit_transaction(self) -> None: ...

    def abort_transaction(self) -> None: ...


class Consumer(Protocol):
    """The KafkaConsumer calls the bridge makes."""

    def subscribe(self, topics: list[str], listener: Any = ...) -> None: ...

    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> dict[Partition, list[Message]]: ...

    def assignment(self) -> set[Partition]: ...

    def pause(self, *partitions: Partition) -> None: ...

    def resume(self, *partitions: Partition) -> None: ...

    def commit(self, offsets: Offsets, timeout_ms: int | None = ...) -> None: ...

    def group_metadata(self) -> Any: ...

    def end_offsets(self, partitions: list[Partition], timeout_ms: int | None = ...) -> dict[Partition, int]: ...

    def highwater(self, partition: Partition) -> int | None: ...

    def position(self, partition: Partition, timeout_ms: int | None = ...) -> int: ...

    def close(self, autocommit: bool = ..., timeout_ms: int | None = ...) -> None: ...


class Connector:
    """Makes the producer and the consumer, retrying an absent broker; both share one --connect-timeout."""

    def __init__(self, s: BridgeSettings, deadline: float, log: Callable[[str], None], stopped: Callable[[], bool]):
        self.s, self.deadline, self.log, self.stopped = s, deadline, log, stopped

    def _retry(self, what: str, make: Callable[[float], Any]) -> Any:
        return connect_with_retry(
            make,
            self.s.kafka,
            what=what,
            timeout=self.s.connect_timeout,
            deadline=self.deadline,
            log=self.log,
            stopped=self.stopped,
            hint="; --connect-timeout waits longer",
        )

    def producer(self) -> Producer:
        """A producer (transactional with --exactly-once; its transactions are not initialised yet)."""
        s = self.s
        # send() blocks this long for a topic's metadata; a short bound lets the delivery retry loop,
        # not kafka-python, decide how long a missing topic or an absent broker is waited for.
        opts: dict[str, Any] = {
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "max_block_ms": int(min(max(s.connect_timeout, 1.0), 10.0) * 1000),
        }
        if s.exactly_once:
            tid = s.transactional_id or f"sentictl-{s.group}-{socket.gethostname()}-{os.getpid()}"
            opts.update(transactional_id=tid, enable_idempotence=True, max_block_ms=15_000)
        producer: Producer = self._retry(
            "producer", lambda t: make_producer(s.kafka, **opts, bootstrap_timeout_ms=int(t * 1000))
        )
        return producer

    def consumer(self) -> Consumer:
        """A consumer of the group, not yet subscribed; it never commits by itself."""
        s = self.s
        opts = dict(
            group_id=s.group,
            auto_offset_reset=s.offset_reset,
            max_poll_records=s.batch_size,
            session_timeout_ms=s.session_timeout_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            heartbeat_interval_ms=max(100, min(3000, s.session_timeout_ms // 3)),
            isolation_level="read_committed" if s.exactly_once else "read_uncommitted",
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        consumer: Consumer = self._retry(
            "consumer", lambda t: make_consumer(s.kafka, **opts, bootstrap_timeout_ms=int(t * 1000))
        )
        return consumer
