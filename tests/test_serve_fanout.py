"""`sentictl serve --publish`: every result also goes to a (label-templated) topic on a real broker."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

from conftest import sentictl_env
from test_serve import Server


def _consume(bootstrap: str, topics: list[str], expected: int, timeout: float = 30.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        enable_auto_commit=False,
    )
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)  # stops after 1 s without a record
    finally:
        consumer.close()
    return records


def _wait_metric(server: Server, name: str, value: float, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        metrics = server.metrics()
        if metrics.get(name, 0) >= value or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def test_results_fan_out_to_label_topics_keyed_by_text_hash(tiny_model_dir, kafka_bootstrap, topic_name, tmp_path):
    prefix = topic_name("serve")
    template = prefix + "-{label}"
    s = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--publish",
            template,
            "--max-body-bytes",
            "2000000",
            "--max-chars",
            "2000000",
        ],
        # Only the shared variable names the broker: the same SENTICTL_KAFKA_* as bridge.
        env=sentictl_env(SENTICTL_KAFKA_BOOTSTRAP=kafka_bootstrap),
    ).wait_healthy()
    try:
        texts = [
            f"company {i} said net profit {w} in the quarter" for i, w in enumerate(["rose", "fell", "was flat"] * 3)
        ]
        answers = [s.client.post("/sentiment", content=t.encode()).json() for t in texts[:4]]
        answers += s.client.post("/sentiment", json={"texts": texts[4:]}).json()
        answers.append(s.client.post("/sentiment", content=texts[0].encode()).json())  # a cache hit is published too
        assert answers[-1]["metadata"]["cache_hit"] is True
        sent = [(a["text"], a["label"]) for a in answers]
        metrics = _wait_metric(s, "sentictl_published_total", len(sent))
        assert metrics["sentictl_published_total"] == len(sent)
        assert metrics.get("sentictl_publish_failures_total", 0) == 0

        topics = sorted({template.format(label=label) for _, label in sent})
        records = _consume(kafka_bootstrap, topics, len(sent))
        got = Counter()
        for rec in records:
            value = json.loads(rec.value)
            assert rec.topic == template.format(label=value["label"])
            assert rec.key == hashlib.sha256(value["text"].encode()).hexdigest().encode()
            assert set(value) >= {"text", "label", "score", "scores", "model"}
            got[(value["text"], value["label"])] += 1
        assert got == Counter(sent)

        # A record the broker cannot take (over the producer's 1 MiB request limit) is counted and logged.
        huge = "x" * 1_100_000
        r = s.client.post("/sentiment", content=huge.encode())
        assert r.status_code == 200  # the HTTP answer does not depend on the broker
        metrics = _wait_metric(s, "sentictl_publish_failures_total", 1)
        assert metrics["sentictl_publish_failures_total"] == 1
    finally:
        code, err = s.stop()
    assert code == 0, err
    assert f"publish to {prefix}-" in err and "failed" in err and hashlib.sha256(huge.encode()).hexdigest() in err


def test_publisher_retries_retriable_errors_and_counts_final_failures():
    """The retry policy without a broker: retriable errors are re-sent, the rest counted once."""
    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    from sentictl.kafka import KafkaConfig
    from sentictl.serve.metrics import Metrics
    from sentictl.serve.publisher import Publisher

    metrics = Metrics()
    p = Publisher("{label}-news", KafkaConfig("127.0.0.1:1"), metrics, attempts=3)
    p.publish(
        [{"text": "shares fell", "label": "negative", "score": 0.9, "scores": {}, "model": "m", "cache_hit": False}]
    )
    item = p._queue.get_nowait()
    assert item[0] == "negative-news" and item[1] == hashlib.sha256(b"shares fell").hexdigest().encode()
    assert metrics.publish_pending._value.get() == 1

    p._failed(item, KafkaTimeoutError("broker slow"))
    retried = p._queue.get_nowait()
    assert retried[3] == 2 and metrics.publish_retries._value.get() == 1
    p._failed(retried, KafkaTimeoutError("broker slow"))
    last = p._queue.get_nowait()
    p._failed(last, KafkaTimeoutError("broker slow"))  # third attempt: give up
    assert p._queue.empty()
    assert metrics.publish_failures._value.get() == 1 and metrics.publish_pending._value.get() == 0

    p.publish([{"text": "x", "label": "neutral", "score": 1, "scores": {}, "model": "m"}])
    p._failed(p._queue.get_nowait(), MessageSizeTooLargeError("too big"))  # not retriable: counted at once
    assert p._queue.empty() and metrics.publish_failures._value.get() == 2
