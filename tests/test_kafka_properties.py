"""Kafka properties as Kafka users write them (-X, --kafka-config), mapped onto kafka-python; no broker needed."""

from __future__ import annotations

import importlib.util
import os
import socket

import click
import pytest
from click.testing import CliRunner

from sentictl.cli import cli
from sentictl.errors import KafkaConfigError
from sentictl.kafka import KafkaConfig
from sentictl.kafka.clients import consumer_kwargs, producer_kwargs
from sentictl.kafka.options import ENV, config_from_options, door_options, kafka_options
from sentictl.kafka.properties import BY_NAME, map_properties, merge
from sentictl.kafka.propfile import Given, parse_assignment, parse_properties, read_properties_file

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*ENV.values(), "SENTICTL_BRIDGE_GROUP"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pem(tmp_path):
    path = tmp_path / "file.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def mapped(*assignments: str):
    return map_properties(merge([parse_assignment(a) for a in assignments]))


def config(*assignments: str, **fields) -> KafkaConfig:
    """What config_from_options builds for these -X values (no command-line options)."""
    m = mapped(*assignments)
    values = {"bootstrap": "b:9092", **fields, **m.fields}
    return KafkaConfig(
        **values, settings=m.common, producer_settings=m.producer, consumer_settings=m.consumer, origins=m.origins
    )


# -- every supported property -------------------------------------------------------------------

TLS = ("security.protocol=SSL",)
# property=value → (where it lands, kafka-python argument or KafkaConfig field, value there); extra -X needed.
CASES = [
    ("bootstrap.servers=b1:1,b2:2", "field", "bootstrap", "b1:1,b2:2", ()),
    ("metadata.broker.list=b1:1", "field", "bootstrap", "b1:1", ()),
    ("client.id=news-1", "field", "client_id", "news-1", ()),
    (
        "security.protocol=sasl_ssl",
        "field",
        "security_protocol",
        "SASL_SSL",
        ("sasl.mechanism=PLAIN", "sasl.username=a", f"sasl.password={SECRET}"),
    ),
    (
        "sasl.mechanism=scram-sha-256",
        "field",
        "sasl_mechanism",
        "SCRAM-SHA-256",
        ("security.protocol=SASL_PLAINTEXT", "sasl.username=a", f"sasl.password={SECRET}"),
    ),
    (
        "sasl.mechanisms=PLAIN",
        "field",
        "sasl_mechanism",
        "PLAIN",
        ("security.protocol=SASL_PLAINTEXT", "sasl.username=a", f"sasl.password={SECRET}"),
    ),
    (
        "sasl.username=alice",
        "field",
        "sasl_username",
        "alice",
        ("security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", f"sasl.password={SECRET}"),
    ),
    (
        "sasl.plain.username=alice",
        "field",
        "sasl_username",
        "alice",
        ("security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", f"sasl.password={SECRET}"),
    ),
    (
        f"sasl.password={SECRET}",
        "field",
        "sasl_password",
        SECRET,
        ("security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", "sasl.username=a"),
    ),
    (
        f"sasl.plain.password={SECRET}",
        "field",
        "sasl_password",
        SECRET,
        ("security.protocol=SASL_SSL", "sasl.mechanism=PLAIN", "sasl.username=a"),
    ),
    ("ssl.ca.location=PEM", "field", "ssl_cafile", "PEM", TLS),
    ("ssl.certificate.location=PEM", "field", "ssl_certfile", "PEM", TLS),
    ("ssl.key.location=PEM", "field", "ssl_keyfile", "PEM", (*TLS, "ssl.certificate.location=PEM")),
    ("ssl.endpoint.identification.algorithm=none", "field", "check_hostname", False, TLS),
    ("ssl.endpoint.identification.algorithm=", "field", "check_hostname", False, TLS),
    ("ssl.endpoint.identification.algorithm=HTTPS", "field", "check_hostname", True, TLS),
    (
        f"ssl.key.password={SECRET}",
        "both",
        "ssl_password",
        SECRET,
        (*TLS, "ssl.certificate.location=PEM", "ssl.key.location=PEM"),
    ),
    ("ssl.crl.location=PEM", "both", "ssl_crlfile", "PEM", TLS),
    ("ssl.cipher.suites=ECDHE-RSA-AES256-GCM-SHA384", "both", "ssl_ciphers", "ECDHE-RSA-AES256-GCM-SHA384", TLS),
    ("request.timeout.ms=20000", "both", "request_timeout_ms", 20000, ()),
    ("metadata.max.age.ms=60000", "both", "metadata_max_age_ms", 60000, ()),
    ("topic.metadata.refresh.interval.ms=60000", "both", "metadata_max_age_ms", 60000, ()),
    ("reconnect.backoff.ms=100", "both", "reconnect_backoff_ms", 100, ()),
    ("reconnect.backoff.max.ms=5000", "both", "reconnect_backoff_max_ms", 5000, ()),
    ("retry.backoff.ms=250", "both", "retry_backoff_ms", 250, ()),
    ("connections.max.idle.ms=600000", "both", "connections_max_idle_ms", 600000, ()),
    ("max.in.flight.requests.per.connection=1", "both", "max_in_flight_requests_per_connection", 1, ()),
    ("max.in.flight=3", "both", "max_in_flight_requests_per_connection", 3, ()),
    ("receive.message.max.bytes=200000000", "both", "receive_message_max_bytes", 200000000, ()),
    ("socket.send.buffer.bytes=131072", "both", "send_buffer_bytes", 131072, ()),
    ("send.buffer.bytes=-1", "both", "send_buffer_bytes", None, ()),
    ("socket.receive.buffer.bytes=0", "both", "receive_buffer_bytes", None, ()),
    ("receive.buffer.bytes=65536", "both", "receive_buffer_bytes", 65536, ()),
    (
        "socket.keepalive.enable=true",
        "both",
        "socket_options",
        [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)],
        (),
    ),
    ("socket.nagle.disable=false", "both", "socket_options", [], ()),
    (
        "client.dns.lookup=resolve_canonical_bootstrap_servers_only",
        "both",
        "client_dns_lookup",
        "resolve_canonical_bootstrap_servers_only",
        (),
    ),
    ("allow.auto.create.topics=false", "both", "allow_auto_create_topics", False, ()),
    ("metrics.num.samples=3", "both", "metrics_num_samples", 3, ()),
    ("metrics.sample.window.ms=10000", "both", "metrics_sample_window_ms", 10000, ()),
    ("acks=all", "producer", "acks", "all", ()),
    ("acks=-1", "producer", "acks", "all", ()),
    ("acks=1", "producer", "acks", 1, ()),
    ("request.required.acks=0", "producer", "acks", 0, ()),
    ("compression.type=gzip", "producer", "compression_type", "gzip", ()),
    ("compression.codec=GZIP", "producer", "compression_type", "gzip", ()),
    ("compression.type=none", "producer", "compression_type", None, ()),
    ("linger.ms=20", "producer", "linger_ms", 20, ()),
    ("queue.buffering.max.ms=0", "producer", "linger_ms", 0, ()),
    ("batch.size=65536", "producer", "batch_size", 65536, ()),
    ("enable.idempotence=false", "producer", "enable_idempotence", False, ()),
    ("retries=3", "producer", "retries", 3, ()),
    ("message.send.max.retries=0", "producer", "retries", 0, ()),
    ("delivery.timeout.ms=60000", "producer", "delivery_timeout_ms", 60000, ()),
    ("message.timeout.ms=60000", "producer", "delivery_timeout_ms", 60000, ()),
    ("message.max.bytes=2097152", "producer", "max_request_size", 2097152, ()),
    ("max.request.size=2097152", "producer", "max_request_size", 2097152, ()),
    ("max.block.ms=5000", "producer", "max_block_ms", 5000, ()),
    ("transaction.timeout.ms=30000", "producer", "transaction_timeout_ms", 30000, ()),
    ("group.id=readers", "consumer", "group_id", "readers", ()),
    ("group.instance.id=pod-1", "consumer", "group_instance_id", "pod-1", ()),
    ("session.timeout.ms=30000", "consumer", "session_timeout_ms", 30000, ()),
    ("heartbeat.interval.ms=1000", "consumer", "heartbeat_interval_ms", 1000, ()),
    ("max.poll.interval.ms=600000", "consumer", "max_poll_interval_ms", 600000, ()),
    ("max.poll.records=100", "consumer", "max_poll_records", 100, ()),
    ("auto.offset.reset=latest", "consumer", "auto_offset_reset", "latest", ()),
    ("auto.offset.reset=smallest", "consumer", "auto_offset_reset", "earliest", ()),
    ("auto.offset.reset=END", "consumer", "auto_offset_reset", "latest", ()),
    ("isolation.level=read_committed", "consumer", "isolation_level", "read_committed", ()),
    ("fetch.min.bytes=1024", "consumer", "fetch_min_bytes", 1024, ()),
    ("fetch.max.bytes=10485760", "consumer", "fetch_max_bytes", 10485760, ()),
    ("fetch.max.wait.ms=100", "consumer", "fetch_max_wait_ms", 100, ()),
    ("fetch.wait.max.ms=100", "consumer", "fetch_max_wait_ms", 100, ()),
    ("max.partition.fetch.bytes=2097152", "consumer", "max_partition_fetch_bytes", 2097152, ()),
    ("fetch.message.max.bytes=2097152", "consumer", "max_partition_fetch_bytes", 2097152, ()),
    (
        "partition.assignment.strategy=roundrobin,range",
        "consumer",
        "partition_assignment_strategy",
        ("roundrobin", "range"),
        (),
    ),
    (
        "partition.assignment.strategy=org.apache.kafka.clients.consumer.StickyAssignor",
        "consumer",
        "partition_assignment_strategy",
        ("sticky",),
        (),
    ),
    ("check.crcs=false", "consumer", "check_crcs", False, ()),
    ("client.rack=eu-west-1a", "consumer", "client_rack", "eu-west-1a", ()),
    ("exclude.internal.topics=false", "consumer", "exclude_internal_topics", False, ()),
    (
        "sasl.kerberos.service.name=kafka-prod",
        "both",
        "sasl_kerberos_service_name",
        "kafka-prod",
        ("security.protocol=SASL_PLAINTEXT", "sasl.mechanism=GSSAPI"),
    ),
    (
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" '
        f'password="{SECRET}";',
        "field",
        "sasl_password",
        SECRET,
        ("security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512"),
    ),
]


def _resolve(text, pem):
    return text.replace("=PEM", "=" + pem)


@pytest.mark.parametrize("assignment, where, target, expected, extra", CASES, ids=[c[0][:60] for c in CASES])
def test_every_supported_property_maps_to_its_kafka_python_argument(
    assignment, where, target, expected, extra, pem, monkeypatch
):
    if "GSSAPI" in " ".join(extra):
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: object() if name == "gssapi" else real(name, *a)
        )
    expected = pem if expected == "PEM" else expected
    c = config(*(_resolve(a, pem) for a in (*extra, assignment)))
    producer, consumer = producer_kwargs(c), consumer_kwargs(c, group_id="g")
    if where == "field":
        assert getattr(c, target) == expected
        return
    assert target in c.origins and c.origins[target].endswith("(-X)")
    if where in ("both", "producer"):
        assert producer[target] == expected
    else:
        assert target not in producer, "a consumer property must not reach the producer"
    if where in ("both", "consumer"):
        got = consumer[target]
        if target == "partition_assignment_strategy":
            got = tuple(cls.name for cls in got)
        assert got == expected
    else:
        assert target not in consumer, "a producer property must not reach the consumer"


def test_the_cases_cover_every_supported_property_and_alias():
    covered = {merge([parse_assignment(c[0])]).popitem()[0] for c in CASES}
    spelled = {c[0].split("=", 1)[0] for c in CASES}
    assert covered == set(BY_NAME)
    assert {alias for p in BY_NAME.values() for alias in p.aliases} <= spelled


def test_every_target_is_a_real_kafka_python_argument_of_its_side():
    """kafka-python's own DEFAULT_CONFIG names: a renamed argument fails here, not at a user's first connect."""
    from kafka import KafkaConsumer, KafkaProducer

    producer, consumer = set(KafkaProducer.DEFAULT_CONFIG), set(KafkaConsumer.DEFAULT_CONFIG)
    for prop in BY_NAME.values():
        if prop.side == "connection":
            continue
        if prop.side in ("both", "producer"):
            assert prop.target in producer, prop.name
        if prop.side in ("both", "consumer"):
            assert prop.target in consumer, prop.name


def test_kafka_python_accepts_every_argument_without_a_broker(pem):
    """The producer and consumer constructors take the mapped values (api_version given: no bootstrap needed)."""
    from kafka import KafkaConsumer, KafkaProducer

    c = config(
        "compression.type=gzip",
        "linger.ms=20",
        "batch.size=32768",
        "acks=1",
        "retries=5",
        "delivery.timeout.ms=60000",
        "max.block.ms=1000",
        "message.max.bytes=2097152",
        "request.timeout.ms=20000",
        "metadata.max.age.ms=60000",
        "socket.keepalive.enable=true",
        "reconnect.backoff.max.ms=1000",
        "session.timeout.ms=30000",
        "heartbeat.interval.ms=1000",
        "max.poll.interval.ms=600000",
        "isolation.level=read_committed",
        "fetch.max.bytes=10485760",
        "max.partition.fetch.bytes=2097152",
        "fetch.max.wait.ms=100",
        "partition.assignment.strategy=sticky,range",
        "check.crcs=false",
        "client.rack=r1",
        "group.instance.id=pod-1",
        "auto.offset.reset=smallest",
        "client.id=me",
    )
    producer = KafkaProducer(**producer_kwargs(c, api_version=(2, 8), max_block_ms=100))
    try:
        assert producer.config["compression_type"] == "gzip" and producer.config["acks"] == 1
        assert producer.config["client_id"] == "me" and producer.config["linger_ms"] == 20
    finally:
        producer.close(timeout=0)
    consumer = KafkaConsumer(**consumer_kwargs(c, group_id="g", api_version=(2, 8)))
    try:
        assert consumer.config["isolation_level"] == "read_committed"
        assert consumer.config["group_instance_id"] == "pod-1"
        assert [a.name for a in consumer.config["partition_assignment_strategy"]] == ["sticky", "range"]
    finally:
        consumer.close(autocommit=False)


# -- refused properties and bad values: one line naming the property ----------------------------


@pytest.mark.parametrize(
    "assignment, words",
    [
        (
            "lingr.ms=5",
            "unknown Kafka property lingr.ms (-X); did you mean linger.ms? (-X list shows the supported ones)",
        ),
        ("bootstrap_servers=b:1", "did you mean bootstrap.servers?"),
        ("no.such.thing=1", "unknown Kafka property no.such.thing (-X) (-X list"),
        ("Linger.ms=5", "did you mean linger.ms?"),
        ("enable.auto.commit=true", "enable.auto.commit (-X) is managed by sentictl: sentictl commits offsets itself"),
        ("auto.commit.interval.ms=100", "is managed by sentictl"),
        (
            "value.serializer=org.apache.kafka.common.serialization.StringSerializer",
            "reads and writes the record bytes",
        ),
        ("key.deserializer=x", "is managed by sentictl"),
        ("transactional.id=t1", "--exactly-once --transactional-id"),
        ("debug=all", "debug (-X) cannot be used: librdkafka-only"),
        ("statistics.interval.ms=1000", "librdkafka-only"),
        ("queue.buffering.max.messages=1000", "librdkafka-only"),
        ("socket.timeout.ms=1000", "librdkafka-only, no kafka-python equivalent (use request.timeout.ms)"),
        ("log.connection.close=false", "librdkafka-only"),
        ("api.version.request=true", "asks the broker for its API versions"),
        ("ssl.ca.pem=-----BEGIN", "inline PEM is librdkafka-only"),
        ("enable.ssl.certificate.verification=false", "always verifies the broker's certificate"),
        ("ssl.keystore.location=/k.jks", "not Java key stores"),
        ("ssl.truststore.password=x", "not Java key stores"),
        ("sasl.oauthbearer.token.endpoint.url=https://idp", "OAUTHBEARER is not supported: kafka-python needs a token"),
        ("sasl.login.callback.handler.class=x", "OAUTHBEARER is not supported"),
        ("sasl.kerberos.keytab=/k", "run kinit"),
        ("partitioner.class=x.Y", "names a Java class"),
        ("partitioner=consistent_random", "murmur2"),
        ("interceptor.classes=x", "names a Java class"),
        ("buffer.memory=1", "does not bound its send buffer"),
        ("compression.level=5", "each codec's own compression level"),
        ("group.protocol=consumer", "classic consumer-group protocol only"),
        ("retry.backoff.max.ms=1000", "retry.backoff.ms only"),
        ("linger.ms=soon", "linger.ms (-X) 'soon' is not a whole number"),
        ("linger.ms=-1", "linger.ms (-X) '-1' is below 0"),
        ("batch.size=0", "batch.size (-X) '0' is below 1"),
        ("request.timeout.ms=", "request.timeout.ms (-X) '' is not a whole number"),
        ("enable.idempotence=maybe", "enable.idempotence (-X) 'maybe' is not true or false"),
        ("acks=2", "acks (-X) '2' is not all, -1, 0 or 1"),
        ("compression.type=brotli", "compression.type (-X) 'brotli' is not one of none, gzip, snappy, lz4, zstd"),
        ("auto.offset.reset=none", "a new group must start somewhere, use earliest or latest"),
        ("auto.offset.reset=middle", "is not one of earliest, latest"),
        ("isolation.level=serializable", "is not one of read_committed, read_uncommitted"),
        ("client.dns.lookup=default", "is not one of use_all_dns_ips"),
        ("partition.assignment.strategy=cooperative-sticky", "cooperative (incremental) rebalancing"),
        (
            "partition.assignment.strategy=org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            "cooperative (incremental) rebalancing",
        ),
        ("partition.assignment.strategy=fair", "unknown assignor 'fair'"),
        ("ssl.endpoint.identification.algorithm=ldaps", "is not https, none or empty"),
        ("sasl.password=", "sasl.password (-X) '***' is empty"),
        ("sasl.jaas.config=nonsense", "sasl.jaas.config (-X) is not 'LoginModule required"),
        (
            "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            "OAUTHBEARER is not supported",
        ),
        ("sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true;", "run kinit"),
        ('sasl.jaas.config=x.PlainLoginModule required username="a";', "PlainLoginModule without password"),
    ],
)
def test_refused_properties_and_bad_values_are_one_line_naming_the_property(assignment, words):
    with pytest.raises(KafkaConfigError) as info:
        mapped(assignment)
    message = str(info.value)
    assert words in message, message
    assert "\n" not in message and SECRET not in message


def test_harmless_values_of_managed_properties_are_accepted():
    m = mapped(
        "enable.auto.commit=false",
        "auto.commit.enable=FALSE",
        "enable.ssl.certificate.verification=true",
        "group.protocol=classic",
    )
    assert not (m.fields or m.common or m.producer or m.consumer)


def test_combinations_kafka_python_refuses_late_are_refused_now():
    with pytest.raises(KafkaConfigError, match=r"enable.idempotence \(-X\) true needs acks=all \(now acks \(-X\) 1\)"):
        mapped("enable.idempotence=true", "acks=1")
    with pytest.raises(KafkaConfigError, match="needs retries above 0"):
        mapped("enable.idempotence=true", "retries=0")
    with pytest.raises(KafkaConfigError, match="max.in.flight.requests.per.connection 5 or less"):
        mapped("enable.idempotence=true", "max.in.flight=6")
    with pytest.raises(
        KafkaConfigError,
        match=r"fetch.max.wait.ms \(-X\) 40000 must be below "
        r"request.timeout.ms \(default\) 30000",
    ):
        mapped("fetch.max.wait.ms=40000")
    with pytest.raises(
        KafkaConfigError,
        match=r"request.timeout.ms \(-X\) 600000 must be below "
        r"connections.max.idle.ms \(default\) 540000",
    ):
        mapped("request.timeout.ms=600000")
    assert mapped("acks=1").producer == {"acks": 1}  # kafka-python then drops idempotence by itself


def test_the_same_property_spelled_twice_in_one_place_is_refused_but_later_places_win():
    with pytest.raises(
        KafkaConfigError,
        match=r"linger.ms \(-X\) and queue.buffering.max.ms \(-X\) are the same "
        r"property: keep one",
    ):
        mapped("linger.ms=5", "queue.buffering.max.ms=10")
    assert mapped("linger.ms=5", "linger.ms=7").producer == {"linger_ms": 7}
    file = parse_properties("queue.buffering.max.ms=10\n", "f.properties")
    assert map_properties(merge(file, [parse_assignment("linger.ms=3")])).producer == {"linger_ms": 3}


@pytest.mark.parametrize(
    "codec, module, package",
    [("snappy", "snappy", "python-snappy"), ("lz4", "lz4", "lz4"), ("zstd", "zstandard", "zstandard")],
)
def test_a_codec_without_its_library_says_what_to_install(codec, module, package, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(KafkaConfigError) as info:
        mapped(f"compression.type={codec}")
    assert str(info.value) == (
        f"compression.type (-X) '{codec}' needs the Python package {package}, which is not "
        f"installed: pip install {package} (or pip install 'sentictl[kafka-compression]' "
        f"for every codec)"
    )


@pytest.mark.parametrize("codec, module", [("snappy", "snappy"), ("lz4", "lz4"), ("zstd", "zstandard")])
def test_optional_codecs_map_when_their_library_is_installed(codec, module):
    pytest.importorskip(module)
    assert mapped(f"compression.type={codec.upper()}").producer == {"compression_type": codec}


def test_tls_and_kerberos_settings_need_their_protocol(pem):
    with pytest.raises(
        KafkaConfigError,
        match=r"^ssl.crl.location \(-X\) needs security.protocol SSL or SASL_SSL "
        r"\(now PLAINTEXT\)",
    ):
        config(f"ssl.crl.location={pem}")
    with pytest.raises(KafkaConfigError, match=r"ssl.key.password \(-X\) needs ssl.key.location"):
        config("security.protocol=SSL", "ssl.key.password=x")
    with pytest.raises(KafkaConfigError, match=r"ssl.crl.location \(-X\) /nonexistent.pem: no such file"):
        config("security.protocol=SSL", "ssl.crl.location=/nonexistent.pem")
    with pytest.raises(
        KafkaConfigError,
        match=r"sasl.kerberos.service.name \(-X\) only applies to sasl.mechanism "
        r"GSSAPI \(now none\)",
    ):
        config("sasl.kerberos.service.name=kafka")


def test_messages_name_the_property_the_user_wrote():
    with pytest.raises(KafkaConfigError, match=r"^security.protocol \(-X\) 'TLS' is unknown"):
        config("security.protocol=TLS")
    with pytest.raises(
        KafkaConfigError,
        match=r"^sasl.mechanisms \(-X\) 'OAUTHBEARER' is not supported "
        r"\(kafka-python needs a token-provider object",
    ):
        config("security.protocol=SASL_SSL", "sasl.mechanisms=oauthbearer")
    with pytest.raises(KafkaConfigError, match=r"^security.protocol \(-X\) SASL_SSL needs sasl.mechanism"):
        config("security.protocol=sasl_ssl")
    with pytest.raises(KafkaConfigError, match=r"^sasl.mechanism \(-X\) PLAIN needs sasl.username"):
        config("security.protocol=sasl_ssl", "sasl.mechanism=plain")
    with pytest.raises(KafkaConfigError, match=r"^bootstrap.servers \(-X\) 'b:x'"):
        config("bootstrap.servers=b:x")


def test_secrets_never_show():
    c = config(
        "security.protocol=SASL_SSL",
        "sasl.mechanism=PLAIN",
        f'sasl.jaas.config=x.PlainLoginModule required username="alice" password="{SECRET}";',
    )
    assert c.sasl_username == "alice" and c.sasl_password == SECRET
    assert SECRET not in repr(c) and SECRET not in c.describe()
    with pytest.raises(KafkaConfigError) as info:
        mapped(f"sasl.jaas.config={SECRET}")
    assert SECRET not in str(info.value)


def test_factories_let_properties_beat_door_defaults_and_drop_what_does_not_apply():
    c = config("request.timeout.ms=20000", "linger.ms=50", "group.instance.id=pod-1", "reconnect.backoff.max.ms=900")
    producer = producer_kwargs(c, request_timeout_ms=10_000, reconnect_backoff_max_ms=2000, max_block_ms=1)
    assert producer["request_timeout_ms"] == 20000 and producer["linger_ms"] == 50 and producer["max_block_ms"] == 1
    assert producer["reconnect_backoff_max_ms"] == 900 and producer["acks"] == "all"
    assert "group_instance_id" not in producer
    # A group-less reader (the exactly-once check) cannot be a static member.
    assert "group_instance_id" not in consumer_kwargs(c)
    assert consumer_kwargs(c, group_id="g")["group_instance_id"] == "pod-1"
    assert consumer_kwargs(c)["enable_auto_commit"] is False


def test_describe_mentions_compression():
    assert config("compression.type=gzip").describe() == "b:9092 (PLAINTEXT; gzip compression)"


# -- the properties file ------------------------------------------------------------------------


def test_properties_file_syntax():
    text = (
        "# a comment\n"
        "! another comment\n"
        "\n"
        "   \t\n"
        "bootstrap.servers=broker1:9092,broker2:9092\n"
        "security.protocol : SASL_SSL\n"
        "sasl.mechanism SCRAM-SHA-512\n"
        "  client.id=indented   \n"
        "sasl.password=pa\\u00dfword\\ \n"
        "ssl.cipher.suites=ECDHE-RSA-AES256-GCM-SHA384:\\\n"
        "      ECDHE-RSA-AES128-GCM-SHA256\n"
        "key\\=with\\:seps=v=1\n"
        "empty.value=\n"
        "only.key\n"
        "# trailing comment \\\n"
        "linger.ms=5\n"
        "linger.ms=7\n"
    )
    got = parse_properties(text, "client.properties")
    as_dict = {name: given.value for name, given in got}
    assert as_dict == {
        "bootstrap.servers": "broker1:9092,broker2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "client.id": "indented",
        "sasl.password": "paßword ",
        "ssl.cipher.suites": "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
        "key=with:seps": "v=1",
        "empty.value": "",
        "only.key": "",
        "linger.ms": "7",
    }
    origins = {name: given.origin for name, given in got}
    assert origins["bootstrap.servers"] == "client.properties:5"
    assert origins["ssl.cipher.suites"] == "client.properties:10" and origins["linger.ms"] == "client.properties:17"
    assert parse_properties("\ufeffa=1\r\nb=2\r\n", "f")[1] == ("b", Given("2", "f:2", "b"))


def test_a_file_and_its_errors(tmp_path):
    path = tmp_path / "client.properties"
    path.write_bytes("\ufeff# producer tuning\ncompression.type: gzip\nlinger.ms = soon\n".encode())
    with pytest.raises(KafkaConfigError, match=rf"^linger.ms \({path}:3\) 'soon' is not a whole number$"):
        map_properties(merge(read_properties_file(str(path))))
    with pytest.raises(KafkaConfigError, match=r"^--kafka-config /nonexistent/x.properties: no such file$"):
        read_properties_file("/nonexistent/x.properties")
    with pytest.raises(KafkaConfigError, match=r": a directory, not a properties file$"):
        read_properties_file(str(tmp_path))
    with pytest.raises(KafkaConfigError, match=r"x.properties: cannot be read \(Not a directory\)$"):
        read_properties_file(str(path / "x.properties"))
    path.write_bytes(b"sasl.password=caf\xe9\n")
    with pytest.raises(KafkaConfigError, match=r": not UTF-8 text \(byte 17\); save it as UTF-8$"):
        read_properties_file(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file(tmp_path):
    path = tmp_path / "secret.properties"
    path.write_text("a=1\n")
    path.chmod(0)
    with pytest.raises(KafkaConfigError, match="not readable by this user"):
        read_properties_file(str(path))


# -- options, precedence, the commands ----------------------------------------------------------


def command(**kafka_kwargs):
    @click.command()
    @click.option("--group", envvar="SENTICTL_BRIDGE_GROUP", default="sentictl")
    @click.option("--from", "offset_reset", type=click.Choice(["earliest", "latest"]), default="earliest")
    @kafka_options(**kafka_kwargs)
    def show(**opts):
        try:
            c = config_from_options(opts)
            opts, c = door_options(opts, c, {"group": "group_id", "offset_reset": "auto_offset_reset"})
        except KafkaConfigError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"bootstrap={c.bootstrap} client_id={c.client_id} group={opts['group']} "
            f"from={opts['offset_reset']} linger={c.producer_settings.get('linger_ms')} "
            f"consumer={sorted(c.consumer_settings)}"
        )

    return show


def run(args=(), env=None, **kafka_kwargs):
    result = CliRunner().invoke(command(**kafka_kwargs), list(args), env=env)
    return result


@pytest.fixture
def props(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(
        "bootstrap.servers=file:1\nclient.id=from-file\ngroup.id=file-group\nlinger.ms=10\nauto.offset.reset=latest\n"
    )
    return str(path)


def test_precedence_command_line_then_x_then_file_then_environment_then_default(props):
    # Defaults only.
    out = run(bootstrap_default="default:1").stdout
    assert "bootstrap=default:1 client_id=sentictl group=sentictl from=earliest linger=None" in out
    # The environment beats defaults.
    env = {ENV["bootstrap"]: "env:1", ENV["client_id"]: "env-id", "SENTICTL_BRIDGE_GROUP": "env-group"}
    assert "bootstrap=env:1 client_id=env-id group=env-group" in run(env=env, bootstrap_default="default:1").stdout
    # The file beats the environment (also when the file itself comes from SENTICTL_KAFKA_CONFIG).
    for args, extra in (([f"--kafka-config={props}"], {}), ([], {ENV["kafka_config"]: props})):
        out = run(args, env={**env, **extra}).stdout
        assert "bootstrap=file:1 client_id=from-file group=file-group from=latest linger=10 consumer=[]" in out
    # -X beats the file.
    out = run(
        ["--kafka-config", props, "-X", "bootstrap.servers=x:1", "-X", "group.id=x-group", "-X", "linger.ms=20"],
        env=env,
    ).stdout
    assert "bootstrap=x:1 client_id=from-file group=x-group from=latest linger=20" in out
    # An option on the command line beats everything, with a notice naming what it overrode.
    result = run(
        [
            "--kafka-config",
            props,
            "-X",
            "bootstrap.servers=x:1",
            "--bootstrap",
            "cli:1",
            "--group",
            "cli-g",
            "--from",
            "earliest",
        ],
        env=env,
    )
    assert "bootstrap=cli:1 client_id=from-file group=cli-g from=earliest linger=10 consumer=[]" in result.stdout
    assert "--bootstrap given on the command line wins over bootstrap.servers (-X)" in result.stderr
    assert "--group given on the command line wins over group.id" in result.stderr
    assert "--from given on the command line wins over auto.offset.reset" in result.stderr


def test_x_and_file_problems_through_the_command(tmp_path):
    result = run(["-X", "linger.ms"])
    assert result.exit_code == 2 and "'linger.ms' is not NAME=VALUE, e.g. -X compression.type=gzip" in result.output
    result = run(["--bootstrap", "b:1", "--kafka-config", str(tmp_path / "missing.properties")])
    assert result.exit_code == 1
    missing = tmp_path / "missing.properties"
    assert result.output.strip().splitlines() == [f"Error: --kafka-config {missing}: no such file"]
    result = run(["--bootstrap", "b:1", "-X", "fetch.wait.max.ms=x"])
    assert result.exit_code == 1 and result.output.strip() == "Error: fetch.wait.max.ms (-X) 'x' is not a whole number"
    result = run(["-X", "list"])
    assert result.exit_code == 0 and "compression.type" in result.stdout and "group.id" in result.stdout
    assert run(["-X", "bootstrap.servers=only-x:1"]).stdout.startswith("bootstrap=only-x:1")


def test_without_a_click_context_given_values_count_as_explicit():
    c = config_from_options({"bootstrap": "opt:1", "kafka_properties": ("bootstrap.servers=x:1", "client.id=x")})
    assert c.bootstrap == "opt:1" and c.client_id == "x"


BRIDGE = ["bridge", "--in", "news", "--out", "scored", "--model-dir", "/nonexistent"]
SERVE = ["serve", "--publish", "{label}-news", "--bootstrap", "127.0.0.1:1", "--model-dir", "/nonexistent"]
SASL_SSL = [
    "--security-protocol",
    "sasl_ssl",
    "--sasl-mechanism",
    "scram-sha-256",
    "--sasl-username",
    "alice",
    "--sasl-password",
    SECRET,
]


@pytest.mark.parametrize("door", [BRIDGE, SERVE], ids=["bridge", "serve"])
@pytest.mark.parametrize(
    "args, message, code",
    [
        # Lower-case protocol names are accepted: validation goes on to the (missing) CA file.
        (SASL_SSL + ["--ssl-cafile", "/nonexistent/ca.pem"], "--ssl-cafile /nonexistent/ca.pem: no such file", 1),
        (
            [
                "--security-protocol",
                "sasl_plaintext",
                "--sasl-mechanism",
                "plain",
                "--sasl-username",
                "a",
                "--ssl-cafile",
                "/nonexistent/ca.pem",
            ],
            "--sasl-mechanism PLAIN needs --sasl-password",
            1,
        ),
        (
            [
                "-X",
                "security.protocol=sasl_ssl",
                "-X",
                "sasl.mechanism=scram-sha-512",
                "-X",
                "sasl.username=a",
                "-X",
                f"sasl.password={SECRET}",
                "-X",
                "ssl.ca.location=/nonexistent/ca.pem",
            ],
            "ssl.ca.location (-X) /nonexistent/ca.pem: no such file",
            1,
        ),
        (
            ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "oauthbearer"],
            "--sasl-mechanism 'OAUTHBEARER' is not supported (kafka-python needs a token-provider object",
            1,
        ),
        (["-X", "compression.type=brotli"], "compression.type (-X) 'brotli' is not one of none, gzip", 1),
        (["-X", "enable.auto.commit=true"], "enable.auto.commit (-X) is managed by sentictl", 1),
        (
            ["--kafka-config", "/nonexistent/client.properties"],
            "--kafka-config /nonexistent/client.properties: no such",
            1,
        ),
        (["-X", "compression.type"], "is not NAME=VALUE", 2),
    ],
)
def test_bridge_and_serve_take_the_same_kafka_settings(door, args, message, code):
    result = CliRunner().invoke(cli, [*door, *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert SECRET not in result.output and "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-X", "isolation.level=read_uncommitted"],
            "isolation.level (-X) read_uncommitted cannot be used with --exactly-once, which needs "
            "isolation.level=read_committed: drop it",
        ),
        (["-X", "enable.idempotence=false"], "enable.idempotence (-X) false cannot be used with --exactly-once"),
        (["-X", "acks=1"], "acks (-X) 1 cannot be used with --exactly-once, which needs acks=all"),
    ],
)
def test_exactly_once_refuses_properties_that_contradict_it(args, message):
    result = CliRunner().invoke(cli, [*BRIDGE, "--exactly-once", *args])
    assert result.exit_code == 1 and message in result.output, result.output


def test_bridge_options_and_their_properties_reach_the_bridge_by_precedence(monkeypatch, tmp_path):
    import sentictl.bridge
    import sentictl.cli.bridge

    seen = {}
    monkeypatch.setattr(sentictl.cli.bridge, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(sentictl.bridge, "run_bridge", lambda model, cache, settings, **k: seen.update(s=settings))
    path = tmp_path / "bridge.properties"
    path.write_text(
        "group.id=file-group\nsession.timeout.ms=20000\nmax.poll.records=50\ncompression.type=gzip\n"
        "heartbeat.interval.ms=2000\nisolation.level=read_committed\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            *BRIDGE,
            "--no-cache",
            "--kafka-config",
            str(path),
            "-X",
            "max.poll.records=70",
            "-X",
            "auto.offset.reset=latest",
            "--session-timeout-ms",
            "15000",
        ],
        env={"SENTICTL_BRIDGE_GROUP": "env-group"},
    )
    assert result.exit_code == 0, result.output
    s = seen["s"]
    assert (s.group, s.session_timeout_ms, s.batch_size, s.offset_reset) == ("file-group", 15000, 70, "latest")
    assert s.max_poll_interval_ms == 300_000
    assert s.kafka.producer_settings == {"compression_type": "gzip"}
    assert s.kafka.consumer_settings == {"heartbeat_interval_ms": 2000, "isolation_level": "read_committed"}
    assert "--session-timeout-ms given on the command line wins over session.timeout.ms" in result.output


def test_bridge_help_shows_x_and_kafka_config_with_examples():
    out = " ".join(CliRunner().invoke(cli, ["bridge", "--help"]).output.split())
    for needle in (
        "-X NAME=VALUE",
        "--kafka-config FILE",
        "SENTICTL_KAFKA_CONFIG",
        "-X compression.type=gzip",
        "--kafka-config client.properties",
        "-X list",
        "options on the command line > -X > --kafka-config",
    ):
        assert needle in out, needle
    assert "OAUTHBEARER" not in out
    listed = CliRunner().invoke(cli, ["bridge", "-X", "list"])  # before --in/--out are asked for
    assert listed.exit_code == 0 and "compression.type" in listed.output and "max_request_size" in listed.output
