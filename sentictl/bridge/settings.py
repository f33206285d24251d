"""What `sentictl bridge` is told (BridgeSettings) and what it writes (enrich, headers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import config
from ..engine import ResultDict
from ..errors import BridgeError
from ..kafka import KafkaConfig, TopicTemplate, check_topic

# Fields an --out template may use: the result's label and the topic the record came from.
TEMPLATE_FIELDS = ("label", "topic")
MODEL_HEADER = "sentictl-model"
LABEL_HEADER = "sentictl-label"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_CLIENT_ID = "sentictl-bridge"


# How long one poll blocks: short enough that a signal or a stop condition is noticed quickly.
POLL_MS = 500


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


# The broker's own bookkeeping: writing results or dead letters there would corrupt a group or a transaction.
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")


def check_settings(s: BridgeSettings, labels: Sequence[str] | None = None) -> TopicTemplate:
    """Refuse, before connecting, what can never work: illegal topics, loops, an empty group or field.

    Without ``labels`` (before the model is loaded) an --out template with {label} is checked with a
    stand-in label; with them, every topic it can produce is checked, and loops through an input.
    Returns the --out template.
    """
    if not s.group.strip():
        raise BridgeError("--group is empty: give the consumer group a name, e.g. --group sentictl")
    if s.input_format not in ("raw", "json"):
        raise BridgeError(f"unknown --input {s.input_format!r}: use raw or json")
    if s.input_format == "json" and not all(part for part in s.text_field.split(".")):
        raise BridgeError(
            f"--field {s.text_field!r} is not a field path: use names joined by dots, e.g. --field title "
            f"or --field news.title"
        )
    for topic in s.inputs:
        check_topic(topic, "--in")
    out = TopicTemplate(s.out, allowed=TEMPLATE_FIELDS, option="--out")
    # A stand-in label still catches illegal characters in the fixed parts ('bad/{label}').
    outputs = out.check(label=labels if labels is not None else ["x"], topic=s.inputs)
    if labels is not None or "label" not in out.fields:
        looping = [t for t in outputs if t in s.inputs]
        if looping:
            raise BridgeError(
                f"--out {s.out!r} writes to the input topic {looping[0]!r}: the bridge would consume its own output"
            )
        internal = [t for t in outputs if t in INTERNAL_TOPICS]
        if internal:
            raise BridgeError(f"--out {s.out!r} writes to {internal[0]!r}, one of the broker's internal topics")
    if s.dlq is not None:
        check_topic(s.dlq, "--dlq")
        if s.dlq in s.inputs:
            raise BridgeError(f"--dlq {s.dlq!r} is also an input topic: every bad record would come back forever")
        if s.dlq in INTERNAL_TOPICS:
            raise BridgeError(f"--dlq {s.dlq!r} is one of the broker's internal topics")
        if (labels is not None or "label" not in out.fields) and s.dlq in outputs:
            raise BridgeError(
                f"--dlq {s.dlq!r} is also an --out topic: dead letters (the original bytes) would "
                f"mix with results; give the DLQ its own topic"
            )
    if s.exactly_once and s.eos_check:
        check_topic(s.eos_check_topic, "--eos-check-topic")
        if s.eos_check_topic in s.inputs:
            raise BridgeError(
                f"--eos-check-topic {s.eos_check_topic!r} is an input topic: the check's record "
                f"would be classified; give the check its own topic"
            )
    return out


def enrich(result: ResultDict, obj: Any) -> bytes:
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
