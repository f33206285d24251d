"""Kafka properties against a real broker: compressed output that a client other than kafka-python reads back.

The bridge runs as a user starts it, configured the way Kafka users write it (`-X`, `--kafka-config`),
and stops by itself (--max-messages). Its output is read with aiokafka, and every record batch is
fetched raw to see the codec it was written with. librdkafka-based clients (kcat, confluent-kafka)
cannot talk to tansu 0.6, so aiokafka is the independent reader here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import orjson
import pytest

from conftest import run_sentictl, sentictl_env

aiokafka = pytest.importorskip("aiokafka")
pytest.importorskip("kafka")

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # the record batch's compression attribute


def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    # Created up front: tansu 0.6 drops the first batch sent to a topic it auto-creates.
    from kafka.admin import NewTopic

    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h) for k, v, h in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=0)
    finally:
        producer.close()


async def _read(bootstrap: str, topic: str, expect: int, timeout: float) -> tuple[list, list[int]]:
    """Every record of topic with aiokafka, and the compression attribute of every record batch (raw fetch)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list = []
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"no partitions for {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while len(records) < expect:
            assert time.monotonic() < deadline, f"aiokafka read {len(records)} of {expect} records from {topic}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    codecs: list[int] = []
    try:
        await client.fetch_all_metadata()
        for tp in partitions:
            leader, offset = client.cluster.leader_for_partition(tp), 0
            while True:  # one fetch may hand out a single batch: fetch until every record was seen
                request = FetchRequest(100, 1, 10_000_000, 0, [(tp.topic, [(tp.partition, offset, 10_000_000)])])
                response = await client.send(leader, request)
                seen_before = offset
                for _, parts in response.topics:
                    for _, error, _, *data in parts:
                        assert error == 0, f"fetch error {error}"
                        raw = MemoryRecords(data[-1])
                        while raw.has_next():
                            batch = raw.next_batch()
                            codecs.append(batch.compression_type)
                            offset = max(offset, max(r.offset for r in batch) + 1)
                if offset == seen_before:
                    break
    finally:
        await client.close()
    return records, codecs


def read_with_aiokafka(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> tuple[list, list[int]]:
    return asyncio.run(_read(bootstrap, topic, expect, timeout))


@pytest.fixture(scope="module")
def fingerprint(tiny_model_dir) -> str:
    from sentictl.engine.model import load

    return load(tiny_model_dir, quiet=True, variant="fp32").fingerprint


def test_bridge_gzip_output_keeps_values_keys_and_headers_for_aiokafka(
    kafka_bootstrap, tiny_model_dir, topic_name, tmp_path, fingerprint
):
    src, out, group = topic_name("in"), topic_name("out"), topic_name("g")
    create_topics(kafka_bootstrap, src, partitions=2)
    create_topics(kafka_bootstrap, out)
    n = 60
    texts = [f"headline {i}: profit rose and the outlook was raised" for i in range(n)]
    produce(
        kafka_bootstrap,
        src,
        [(f"k{i}".encode(), t.encode(), [("trace", f"t{i}".encode())]) for i, t in enumerate(texts)],
    )
    # The connection and the group's tuning in a properties file, as other Kafka tools read it.
    config = tmp_path / "client.properties"
    config.write_text(
        "# written for kafka-console-consumer and friends too\n"
        f"bootstrap.servers = {kafka_bootstrap}\n"
        "client.id: news-bridge\n"
        f"group.id={group}\n"
        "auto.offset.reset=earliest\n"
        "session.timeout.ms=3000\n"
        "heartbeat.interval.ms=1000\n"
        "max.poll.interval.ms=20000\n"
        "partition.assignment.strategy=roundrobin\n"
        "fetch.max.wait.ms=100\n"
        "max.partition.fetch.bytes=2097152\n"
        "! producer side\n"
        "acks=all\n"
        "linger.ms=20\n"
        "batch.size=65536\n"
        "socket.keepalive.enable=true\n"
        "compression.type=none\n"
    )
    result = run_sentictl(
        "bridge",
        "--in",
        src,
        "--out",
        out,
        "--kafka-config",
        str(config),
        "-X",
        "compression.type=gzip",
        "-X",
        "max.poll.records=25",
        "--model-dir",
        str(tiny_model_dir),
        "--variant",
        "fp32",
        "--no-cache",
        "--max-messages",
        str(n),
        "--connect-timeout",
        "15",
        "--progress-interval",
        "1",
        timeout=90,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"via {kafka_bootstrap} (PLAINTEXT; gzip compression), group {group}" in stderr

    records, codecs = read_with_aiokafka(kafka_bootstrap, out, n)
    assert len(records) == n
    assert codecs and set(codecs) == {CODECS["gzip"]}, codecs
    seen = set()
    for r in records:
        body = orjson.loads(r.value)
        assert set(body) >= {"text", "label", "score", "scores", "model", "cache_hit"}
        i = int(body["text"].split(":")[0].split()[1])
        headers = dict(r.headers)
        assert r.key == f"k{i}".encode() and headers["trace"] == f"t{i}".encode()
        assert headers["sentictl-model"] == fingerprint.encode()
        assert headers["sentictl-label"] == body["label"].encode()
        seen.add(body["text"])
    assert seen == set(texts)


@pytest.mark.parametrize("codec", list(CODECS))
def test_every_installed_codec_is_written_as_asked(kafka_bootstrap, topic_name, codec):
    """The producer factory that bridge and serve share, with -X compression.type=<codec>."""
    from sentictl.kafka import make_producer
    from sentictl.kafka.options import config_from_options
    from sentictl.kafka.values import CODEC_MODULES

    if CODEC_MODULES[codec]:
        pytest.importorskip(CODEC_MODULES[codec])
        pytest.importorskip("cramjam")  # aiokafka's codecs beyond gzip
    topic = topic_name(codec)
    create_topics(kafka_bootstrap, topic)
    config = config_from_options({"bootstrap": kafka_bootstrap, "kafka_properties": (f"compression.type={codec}",)})
    producer = make_producer(config)
    try:
        futures = [
            producer.send(topic, key=b"k%d" % i, value=b"quarterly profit rose " * 20, headers=[("n", b"%d" % i)])
            for i in range(20)
        ]
        producer.flush(timeout=30)
        assert all(f.get(timeout=0).topic == topic for f in futures)
    finally:
        producer.close()
    records, codecs = read_with_aiokafka(kafka_bootstrap, topic, 20)
    assert [(r.key, dict(r.headers)["n"]) for r in records] == [(b"k%d" % i, b"%d" % i) for i in range(20)]
    assert all(r.value == b"quarterly profit rose " * 20 for r in records)
    assert set(codecs) == {CODECS[codec]}


def test_serve_publish_takes_the_same_properties(kafka_bootstrap, tiny_model_dir, topic_name, tmp_path):
    from test_serve import Server

    topic = topic_name("published")
    create_topics(kafka_bootstrap, topic)
    config = tmp_path / "publish.properties"
    config.write_text("compression.type=gzip\nlinger.ms=10\nclient.id=news-api\n")
    # The file through its variable, a property through -X.
    server = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--no-cache",
            "--publish",
            topic,
            "--bootstrap",
            kafka_bootstrap,
            "-X",
            "acks=1",
        ],
        env=sentictl_env(SENTICTL_KAFKA_CONFIG=str(config)),
    ).wait_healthy()
    try:
        texts = ["Profit rose sharply.", "The company cut its outlook.", "Revenue was flat."]
        answers = server.client.post("/sentiment", json={"texts": texts}).json()
        records, codecs = read_with_aiokafka(kafka_bootstrap, topic, len(texts))
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert sorted(orjson.loads(r.value)["text"] for r in records) == sorted(texts)
    assert {orjson.loads(r.value)["text"]: orjson.loads(r.value)["label"] for r in records} == {
        a["text"]: a["label"] for a in answers
    }
    assert all(r.key == hashlib.sha256(orjson.loads(r.value)["text"].encode()).hexdigest().encode() for r in records)
    assert set(codecs) == {CODECS["gzip"]}
