"""--exactly-once start-up: make sure the broker can do transactions, and does them safely."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..errors import BridgeError
from ..kafka import KafkaConfig, make_consumer, make_producer

_UNSAFE = (
    "Run without --exactly-once (at-least-once, re-delivery bounded by one batch), or with "
    "--skip-eos-check to use transactions anyway"
)


def init_transactions(
    producer: Any, kafka: KafkaConfig, *, check: bool = True, check_topic: str = "__sentictl_eos_check"
) -> None:
    """Initialise the producer's transactions, refusing a broker that cannot do them (safely)."""
    from kafka.errors import KafkaError

    version = producer.config.get("api_version")
    if version is not None and tuple(version) < (0, 11):
        raise BridgeError(
            f"--exactly-once: the broker at {kafka.bootstrap} speaks Kafka {'.'.join(map(str, version))}, "
            f"which has no transactions (needs 0.11+); run without --exactly-once for at-least-once delivery"
        )
    if check:
        check_fencing(kafka, check_topic)
    try:
        producer.init_transactions()
    except KafkaError as exc:
        raise BridgeError(
            f"--exactly-once: the broker at {kafka.bootstrap} cannot do transactions ({exc}); "
            f"run without --exactly-once for at-least-once delivery"
        ) from None


def check_fencing(kafka: KafkaConfig, topic: str) -> None:
    """Refuse exactly-once unless the broker aborts a crashed producer's open transaction.

    That abort is what keeps a half-written batch invisible after kill -9; a broker that
    accepts transactions but skips it (tansu 0.6 does) would turn crash recovery into
    duplicates while the flag promised none.
    """
    from kafka.errors import KafkaError

    from kafka import TopicPartition

    tid = f"sentictl-eos-check-{uuid.uuid4().hex[:12]}"
    crashed = fencer = reader = None
    refuse = (
        f"--exactly-once: the broker at {kafka.bootstrap} accepts transactions but does not abort "
        f"the open transaction of a crashed producer when its successor starts"
    )
    try:
        crashed = make_producer(kafka, transactional_id=tid, max_block_ms=10_000)
        crashed.init_transactions()
        crashed.begin_transaction()
        meta = crashed.send(topic, value=b"sentictl exactly-once check: must stay invisible", partition=0).get(
            timeout=10
        )
        fencer = make_producer(kafka, transactional_id=tid, max_block_ms=10_000)
        fencer.init_transactions()  # must abort `crashed`'s transaction
        reader = make_consumer(kafka, isolation_level="read_committed")
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        reader.seek(tp, meta.offset)
        deadline = time.monotonic() + 10
        while reader.position(tp) <= meta.offset:
            if time.monotonic() > deadline:
                raise BridgeError(
                    f"{refuse} (could not confirm within 10 s); exactly-once cannot be guaranteed. {_UNSAFE}"
                )
            for batch in reader.poll(timeout_ms=200).values():
                if any(m.offset == meta.offset for m in batch):
                    raise BridgeError(
                        f"{refuse}: after a crash its half-written batch would become visible to "
                        f"read_committed consumers, so exactly-once cannot be guaranteed. {_UNSAFE}"
                    )
    except KafkaError as exc:
        raise BridgeError(
            f"--exactly-once: checking the broker's transactions on topic {topic!r} failed ({exc}); "
            f"--eos-check-topic names another topic, --skip-eos-check skips the check"
        ) from None
    finally:
        if reader is not None:
            reader.close(autocommit=False)
        for producer in (fencer, crashed):
            if producer is not None:
                try:
                    producer.close(timeout=1)
                except Exception:  # a fenced producer may complain while closing; the check is done
                    pass
