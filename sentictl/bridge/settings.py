"""What `sentictl bridge` is told (BridgeSettings) and what it writes (enrich, headers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import config
from ..kafka import KafkaConfig

# Fields an --out template may use: the result's label and the topic the record came from.
TEMPLATE_FIELDS = ("label", "topic")
MODEL_HEADER = "sentictl-model"
LABEL_HEADER = "sentictl-label"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_CLIENT_ID = "sentictl-bridge"


def _default_kafka() -> KafkaConfig:
    return KafkaConfig(DEFAULT_BOOTSTRAP, client_id=DEFAULT_CLIENT_ID)


@dataclass
class BridgeSettings:
    """Everything `sentictl bridge` needs besides the model and the cache."""

    inputs: list[str]
    out: str
    kafka: KafkaConfig = field(default_factory=_default_kafka)
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


def enrich(result: dict[str, Any], obj: Any) -> bytes:
    """The output value: the result record for raw input, the object plus "sentiment" for JSON."""
    if obj is None:
        return orjson.dumps(result)
    sentiment = {k: v for k, v in result.items() if k != "text"}
    return orjson.dumps({**obj, "sentiment": sentiment})


def dlq_headers(m: Any, reason: str, message: str) -> list[tuple[str, bytes]]:
    """The consumed record's headers plus why and where it failed, for the dead-letter topic."""
    return list(m.headers or []) + [
        ("sentictl-error", reason.encode()),
        ("sentictl-error-message", message.encode()),
        ("sentictl-source-topic", m.topic.encode()),
        ("sentictl-source-partition", str(m.partition).encode()),
        ("sentictl-source-offset", str(m.offset).encode()),
    ]
