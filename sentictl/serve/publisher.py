"""The --publish fan-out: every result also goes to a (label-templated) Kafka topic."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import BrokerUnavailable, SentictlError
from ..kafka import KafkaConfig, TopicTemplate, make_producer
from .metrics import Metrics

log = logging.getLogger("sentictl.serve")

# The result fields a published record carries (a pair's result has "text_pair" too).
_PUBLISHED = ("text", "text_pair", "label", "score", "scores", "model", "cache_hit")

# One send in the queue: topic, record key, record value, and which attempt this is (from 1).
_Send = tuple[str, bytes, bytes, int]


def check_topic_template(template: str) -> TopicTemplate:
    """The --publish template: {label} is its only field (checked now; names checked per label at start)."""
    return TopicTemplate(template, allowed=("label",), option="--publish")


def text_key(text: str) -> bytes:
    """The record key of a text on the fan-out topic: the sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest().encode()


class Publisher:
    """Produces every result to Kafka from a thread of its own; the HTTP answer never waits on it.

    Failed sends are retried (the producer retries retriable errors itself until its delivery
    timeout, then this class re-sends up to ``attempts`` times); every final failure is counted
    in /metrics and logged with its topic and key.
    """

    def __init__(
        self, template: str, kafka: KafkaConfig, metrics: Metrics, *, attempts: int = 3, max_pending: int = 100_000
    ):
        self.template = check_topic_template(template)
        self.kafka = kafka
        self.metrics = metrics
        self.attempts = max(1, attempts)
        self._queue: queue.Queue[_Send | None] = queue.Queue(maxsize=max_pending)
        self._closing = False
        self._producer: Any = None
        self._thread: threading.Thread | None = None

    def topic(self, label: str) -> str:
        """The topic a result with this label goes to."""
        return self.template.render(label=label)

    def start(self, labels: Sequence[str]) -> None:
        """Check every label's topic, connect to the broker (blocking; raises SentictlError), start sending."""
        self.template.check(label=labels)
        try:
            self._producer = make_producer(
                self.kafka, delivery_timeout_ms=30_000, request_timeout_ms=10_000, max_block_ms=10_000
            )
        except SentictlError:
            raise  # settings kafka-python refused: the message already names them
        except Exception as exc:  # noqa: BLE001 - kafka-python raises several unrelated types here
            raise BrokerUnavailable(
                f"cannot connect to the broker at {self.kafka.bootstrap}: {exc} "
                f"(check --bootstrap and --security-protocol/--sasl-*/--ssl-*)"
            ) from None
        self._thread = threading.Thread(target=self._loop, name="sentictl-publish", daemon=True)
        self._thread.start()

    def publish(self, results: Sequence[dict[str, Any]]) -> None:
        """Queue results for the broker without blocking; a full queue counts as a failure."""
        for r in results:
            record = {k: r[k] for k in _PUBLISHED if k in r}
            if r.get("truncated"):
                record["truncated"] = True
            # A pair's key covers both texts, so it never shares a key with its first text alone.
            key = text_key(r["text"] if "text_pair" not in r else orjson.dumps([r["text"], r["text_pair"]]).decode())
            self._enqueue((self.topic(r["label"]), key, orjson.dumps(record), 1))
            self.metrics.publish_pending.inc()

    def _enqueue(self, item: _Send) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._final_failure(item, "the publish queue is full (the broker is too slow or down)")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, key, value, attempt = item
            try:
                future = self._producer.send(topic, key=key, value=value)
            except Exception as exc:  # noqa: BLE001 - e.g. KafkaTimeoutError after max_block_ms
                self._failed(item, exc)
                continue
            future.add_callback(self._delivered)
            future.add_errback(self._failed, item)

    def _delivered(self, _metadata: Any) -> None:
        self.metrics.published.inc()
        self.metrics.publish_pending.dec()

    def _failed(self, item: _Send, exc: BaseException) -> None:
        topic, key, value, attempt = item
        if getattr(exc, "retriable", False) and attempt < self.attempts and not self._closing:
            self.metrics.publish_retries.inc()
            log.warning(
                "publish to %s (key %s) failed, retrying (%d/%d): %s",
                topic,
                key.decode(),
                attempt,
                self.attempts - 1,
                exc,
            )
            self._enqueue((topic, key, value, attempt + 1))
            return
        self._final_failure(item, f"{type(exc).__name__}: {exc}")

    def _final_failure(self, item: _Send, reason: str) -> None:
        topic, key, _value, attempt = item
        self.metrics.publish_failures.inc()
        self.metrics.publish_pending.dec()
        log.error("publish to %s (key %s) failed after %d attempt(s): %s", topic, key.decode(), attempt, reason)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, wait for acknowledgements (bounded), and close the producer."""
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                log.error("the publish queue did not drain within %.0f s", timeout)
            self._thread.join(timeout)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                log.error("flushing the fan-out producer failed: %s", exc)
            self._closing = True
            try:
                self._producer.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                log.error("closing the fan-out producer failed: %s", exc)
