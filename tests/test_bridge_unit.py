"""`sentictl bridge` pieces that need no broker: record parsing, templates, enrichment, the CLI surface."""

from __future__ import annotations

import re

import orjson
import pytest
from click.testing import CliRunner

from sentictl.bridge import Bridge, BridgeSettings, enrich
from sentictl.bridge.eos import init_transactions
from sentictl.bridge.settings import TEMPLATE_FIELDS
from sentictl.cli import cli
from sentictl.engine.records import BadRecord, Record, from_bytes
from sentictl.errors import BridgeError, TopicError
from sentictl.kafka import KafkaConfig, TopicTemplate


@pytest.mark.parametrize(
    "value, fmt, kind",
    [
        (None, "raw", "empty"),
        (b"   ", "raw", "empty"),
        (b"\xff\xfe caf\xe9", "raw", "invalid_utf8"),
        (b"x" * 41, "raw", "too_long"),
        (b"x" * 11, "raw", "too_long"),
        (b"{not json", "json", "bad_json"),
        (b'{"title": "x"}', "json", "missing_field"),
        (b'["text"]', "json", "missing_field"),
        (b'{"text": 42}', "json", "not_string"),
        (b'{"text": ""}', "json", "empty"),
    ],
)
def test_record_reasons(value, fmt, kind):
    got = from_bytes(value, 10, json_field="text" if fmt == "json" else None)
    assert isinstance(got, BadRecord)
    assert got.reason == kind
    assert got.message


def test_good_records_and_nested_field():
    got = from_bytes("Gewinn über Erwartung\r\n".encode(), 100)
    assert isinstance(got, Record) and got.text == "Gewinn über Erwartung" and got.data is None
    got = from_bytes(b'{"a": {"b": "Shares fell"}, "id": 3}', 100, json_field="a.b")
    assert got.text == "Shares fell"
    assert got.data == {"a": {"b": "Shares fell"}, "id": 3}


def test_enrich_raw_and_json():
    result = {"text": "t", "label": "positive", "score": 0.9, "scores": {}, "model": "m", "cache_hit": False}
    assert orjson.loads(enrich(result, None)) == result
    out = orjson.loads(enrich(result, {"id": 1, "text": "t"}))
    assert out["id"] == 1 and out["text"] == "t"
    assert out["sentiment"]["label"] == "positive" and "text" not in out["sentiment"]


def out_template(template: str) -> TopicTemplate:
    return TopicTemplate(template, allowed=TEMPLATE_FIELDS, option="--out")


def test_out_templates():
    assert out_template("scored").fields == ()
    assert out_template("{label}-news").fields == ("label",)
    assert out_template("{topic}.{label}").fields == ("topic", "label")
    assert out_template("{topic}.{label}").render(label="positive", topic="news") == "news.positive"
    with pytest.raises(TopicError, match="unknown placeholder {lable}"):
        out_template("{lable}-news")
    with pytest.raises(TopicError, match="bad --out template"):
        out_template("{label")


class _FakeModel:
    fingerprint = "f" * 16
    name = "fake:fp32"
    labels = ["positive", "negative", "neutral"]


def test_output_topic_equal_to_input_is_refused():
    with pytest.raises(BridgeError, match="consume its own output"):
        Bridge(_FakeModel(), None, BridgeSettings(inputs=["news"], out="news"))
    # A template that routes one label back into an input loops just the same.
    with pytest.raises(BridgeError, match="input topic 'negative-news'"):
        Bridge(_FakeModel(), None, BridgeSettings(inputs=["negative-news"], out="{label}-news"))


@pytest.mark.parametrize(
    "settings, match",
    [
        (
            dict(inputs=["news"], out="{label}/news"),
            "--out '{label}/news' gives the invalid topic name 'positive/news'",
        ),
        (dict(inputs=["news"], out="scored out"), "--out 'scored out' is not a valid Kafka topic name"),
        (dict(inputs=["news!"], out="scored"), "--in 'news!' is not a valid Kafka topic name"),
        (dict(inputs=["news"], out="scored", dlq=".."), "--dlq '..' is not a valid Kafka topic name"),
        (dict(inputs=["news"], out="scored", dlq="news"), "--dlq 'news' is also an input topic"),
        (dict(inputs=["news"], out="{topic}" + "x" * 248), "over Kafka's limit of 249"),
    ],
)
def test_illegal_topics_are_refused_before_connecting(settings, match):
    with pytest.raises((BridgeError, TopicError), match=re.escape(match)):
        Bridge(_FakeModel(), None, BridgeSettings(**settings))


def test_exactly_once_refused_on_a_broker_without_transactions():
    class OldProducer:
        config = {"api_version": (0, 10, 2)}

        def init_transactions(self):
            raise AssertionError("must not be called on a pre-0.11 broker")

    with pytest.raises(BridgeError, match="no transactions .*run without --exactly-once"):
        init_transactions(OldProducer(), KafkaConfig("localhost:9092"))


def test_settings_carry_one_kafka_config():
    settings = BridgeSettings(inputs=["news"], out="scored")
    assert settings.kafka.bootstrap == "localhost:9092" and settings.kafka.client_id == "sentictl-bridge"


def test_help_shows_every_option_with_env_and_examples():
    out = CliRunner().invoke(cli, ["bridge", "--help"], catch_exceptions=False).output
    for needle in (
        "--in",
        "--out",
        "--bootstrap",
        "--group",
        "--dlq",
        "--input",
        "--field",
        "--batch-size",
        "--exactly-once",
        "--max-messages",
        "--idle-timeout",
        "--connect-timeout",
        "--session-timeout-ms",
        "--security-protocol",
        "--sasl-mechanism",
        "--ssl-cafile",
        "--metrics-port",
        "SENTICTL_BRIDGE_IN",
        "SENTICTL_KAFKA_BOOTSTRAP",
        "Examples:",
        "--client-id",
        "--sasl-username",
        "--sasl-password",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--no-check-hostname",
        "SENTICTL_KAFKA_SASL_PASSWORD",
        "SENTICTL_KAFKA_SECURITY_PROTOCOL",
    ):
        assert needle in out, needle
    assert "OAUTHBEARER" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--sasl-mechanism", "OAUTHBEARER", "--security-protocol", "SASL_SSL"],
            "--sasl-mechanism 'OAUTHBEARER' is not supported",
        ),
        (["--security-protocol", "sasl_plaintext"], "--security-protocol SASL_PLAINTEXT needs --sasl-mechanism"),
        (["--sasl-mechanism", "plain"], "--sasl-mechanism PLAIN needs --security-protocol SASL_PLAINTEXT or SASL_SSL"),
        (
            ["--ssl-cafile", "/nonexistent/ca.pem", "--security-protocol", "SSL"],
            "--ssl-cafile /nonexistent/ca.pem: no such file",
        ),
    ],
)
def test_invalid_kafka_settings_exit_1_before_loading_the_model(args, message):
    result = CliRunner().invoke(
        cli, ["bridge", "--in", "news", "--out", "scored", "--model-dir", "/nonexistent", *args]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_required_options_is_a_usage_error():
    result = CliRunner().invoke(cli, ["bridge", "--out", "x"])
    assert result.exit_code == 2
    assert "--in" in result.output


# -- start-up checks that need no model and no broker ------------------------------------------


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(inputs=["news"], out="scored", group="  "), "--group is empty"),
        (
            dict(inputs=["news"], out="scored", input_format="json", text_field="a..b"),
            "--field 'a..b' is not a field path",
        ),
        (dict(inputs=["news"], out="scored", dlq="scored"), "--dlq 'scored' is also an --out topic"),
        (
            dict(inputs=["news"], out="{label}-news", dlq="negative-news"),
            "--dlq 'negative-news' is also an --out topic",
        ),
        (dict(inputs=["news"], out="__consumer_offsets"), "internal topics"),
        (dict(inputs=["news"], out="scored", dlq="__transaction_state"), "internal topics"),
        (
            dict(inputs=["news"], out="scored", exactly_once=True, eos_check_topic="news"),
            "--eos-check-topic 'news' is an input",
        ),
        (dict(inputs=["news", "press"], out="{topic}"), "writes to the input topic 'news'"),
        (dict(inputs=["news"], out="{label} news"), "gives the invalid topic name 'positive news'"),
        (dict(inputs=["n" * 250], out="scored"), "--in '" + "n" * 250 + "' is not a valid Kafka topic name: it is 250"),
        (dict(inputs=["news"], out="s" * 250), "it is 250 characters, over Kafka's limit of 249"),
    ],
)
def test_more_settings_refused_before_connecting(settings, match):
    with pytest.raises((BridgeError, TopicError), match=re.escape(match)):
        Bridge(_FakeModel(), None, BridgeSettings(**settings))


@pytest.mark.parametrize(
    "out, match",
    [
        ("bad/{label}", "--out 'bad/{label}' gives the invalid topic name 'bad/x'"),
        ("{label} news", "--out '{label} news' gives the invalid topic name 'x news'"),
        ("{topic}", "--out '{topic}' writes to the input topic 'news'"),
        ("x" * 250, "over Kafka's limit of 249"),
    ],
)
def test_cli_refuses_bad_topics_before_loading_the_model(out, match):
    # /nonexistent as the model: reaching the model loader would fail with another message.
    result = CliRunner().invoke(
        cli, ["bridge", "--in", "news", "--out", out, "--model-dir", "/nonexistent", "--bootstrap", "127.0.0.1:1"]
    )
    assert result.exit_code == 1, result.output
    assert match in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- riding out broker failures: fakes for kafka-python's producer and consumer -----------------


class _Future:
    def __init__(self, exc=None):
        self.is_done, self.exception = True, exc

    def succeeded(self):
        return self.exception is None

    def failed(self):
        return self.exception is not None


class _FlakyProducer:
    """Each send fails (in its future) while `failures` lasts; flush may raise `flush_errors` first."""

    def __init__(self, failures=0, flush_errors=(), raise_on_send=()):
        self.failures, self.flush_errors, self.raise_on_send = failures, list(flush_errors), list(raise_on_send)
        self.sent, self.acked = [], []

    def send(self, topic, value=None, key=None, headers=None):
        if self.raise_on_send:
            raise self.raise_on_send.pop(0)
        self.sent.append((topic, value))
        if self.failures > 0:
            self.failures -= 1
            from kafka.errors import KafkaConnectionError

            return _Future(KafkaConnectionError("connection reset by peer"))
        self.acked.append((topic, value))
        return _Future()

    def flush(self, timeout=None):
        if self.flush_errors:
            raise self.flush_errors.pop(0)


class _FlakyConsumer:
    def __init__(self, errors=(), assigned=()):
        self.errors, self.commits = list(errors), []
        self.assigned = set(assigned)
        self.polls = 0

    def commit(self, offsets, timeout_ms=None):
        if self.errors:
            raise self.errors.pop(0)
        self.commits.append(dict(offsets))

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps):
        pass

    def resume(self, *tps):
        pass

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        return {}

    def group_metadata(self):
        from kafka.structs import ConsumerGroupMetadata, MemberState

        return ConsumerGroupMetadata("g", 1, "m", None, MemberState.STABLE)


class _Msg:
    def __init__(self, offset, topic="news", partition=0, value=b"Profit rose"):
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.key, self.headers = None, []


def _bridge(**extra) -> Bridge:
    bridge = Bridge(_FakeModel(), None, BridgeSettings(inputs=["news"], out="scored", **extra), log=lambda msg: None)

    def classify(texts, lengths=None, *, logits=False):
        return [
            {"text": t, "label": "positive", "score": 0.9, "scores": {}, "model": "m", "cache_hit": False}
            for t in texts
        ]

    bridge.engine.classify = classify
    return bridge


def test_failed_sends_are_sent_again_and_the_batch_committed_once_all_are_acknowledged():
    bridge = _bridge(connect_timeout=30)
    bridge.producer, bridge.consumer = _FlakyProducer(failures=3), _FlakyConsumer()
    bridge._process([_Msg(0), _Msg(1), _Msg(2)])
    assert len(bridge.producer.acked) == 3
    assert len(bridge.producer.sent) == 6  # three failed, three re-sent
    from kafka import TopicPartition

    assert [{tp: o.offset for tp, o in c.items()} for c in bridge.consumer.commits] == [{TopicPartition("news", 0): 3}]
    assert bridge.stats.consumed == 3 and bridge.stats.produced == 3 and bridge.stats.commits == 1


def test_delivery_that_never_recovers_ends_with_broker_lost_and_no_commit():
    from sentictl.errors import BrokerLost

    bridge = _bridge(connect_timeout=0.3)
    bridge.producer, bridge.consumer = _FlakyProducer(failures=10**9), _FlakyConsumer()
    with pytest.raises(BrokerLost, match=r"delivering a batch failed for .* offsets were not committed") as info:
        bridge._process([_Msg(0), _Msg(1)])
    assert "\n" not in str(info.value)
    assert bridge.consumer.commits == [] and bridge.stats.consumed == 0


def test_send_and_flush_errors_are_retried():
    from kafka.errors import KafkaTimeoutError, NodeNotReadyError

    bridge = _bridge(connect_timeout=30)
    bridge.producer = _FlakyProducer(
        flush_errors=[KafkaTimeoutError("flush timed out")], raise_on_send=[NodeNotReadyError("node 1")]
    )
    bridge.consumer = _FlakyConsumer()
    bridge._process([_Msg(0), _Msg(1)])
    assert len(bridge.producer.acked) == 2 and len(bridge.consumer.commits) == 1


def test_commit_errors_are_retried_and_a_rebalance_rejoins_before_committing_again():
    from kafka.errors import CommitFailedError, KafkaConnectionError, RebalanceInProgressError

    from kafka import TopicPartition

    tp = TopicPartition("news", 0)
    bridge = _bridge(connect_timeout=30)
    bridge.producer = _FlakyProducer()
    bridge.consumer = _FlakyConsumer(
        errors=[KafkaConnectionError("reset"), RebalanceInProgressError(), CommitFailedError()], assigned=[tp]
    )
    bridge._process([_Msg(0), _Msg(1)])
    assert bridge.consumer.polls == 2, "one rejoin poll per rebalance error"
    assert [{t: o.offset for t, o in c.items()} for c in bridge.consumer.commits] == [{tp: 2}]


def test_a_partition_that_moved_away_during_a_rebalance_is_left_to_its_new_owner():
    from kafka.errors import CommitFailedError

    bridge = _bridge(connect_timeout=30)
    bridge.producer = _FlakyProducer()
    bridge.consumer = _FlakyConsumer(errors=[CommitFailedError()], assigned=[])
    bridge._process([_Msg(0)])
    assert bridge.consumer.commits == [] and bridge.stats.consumed == 1


def test_commit_that_never_recovers_ends_with_broker_lost():
    from kafka.errors import KafkaConnectionError

    from sentictl.errors import BrokerLost

    bridge = _bridge(connect_timeout=0.3)
    bridge.producer = _FlakyProducer()
    bridge.consumer = _FlakyConsumer(errors=[KafkaConnectionError("reset")] * 1000)
    with pytest.raises(BrokerLost, match="committing offsets failed .* delivered but its offsets were not committed"):
        bridge._process([_Msg(0)])


def test_a_permanent_error_is_not_retried():
    from kafka.errors import TopicAuthorizationFailedError

    bridge = _bridge(connect_timeout=30)
    bridge.producer = _FlakyProducer(raise_on_send=[TopicAuthorizationFailedError("scored")])
    bridge.consumer = _FlakyConsumer()
    with pytest.raises(BridgeError, match="TopicAuthorizationFailedError"):
        bridge._process([_Msg(0)])
    assert bridge.consumer.commits == []


def test_a_result_too_large_for_the_broker_goes_to_the_dlq():
    from kafka.errors import MessageSizeTooLargeError

    bridge = _bridge(connect_timeout=30, dlq="dead")
    bridge.producer = _FlakyProducer(raise_on_send=[MessageSizeTooLargeError("too big")])
    bridge.consumer = _FlakyConsumer()
    bridge._process([_Msg(0), _Msg(1, value=b"Shares fell")])
    topics = sorted(t for t, _ in bridge.producer.acked)
    assert topics == ["dead", "scored"]
    assert bridge.stats.produced == 1 and bridge.stats.dlq == 1 and bridge.stats.poison == 1
    assert len(bridge.consumer.commits) == 1


def test_stop_during_an_outage_gives_up_without_committing():
    from sentictl.errors import BrokerLost

    bridge = _bridge(connect_timeout=60)
    bridge.producer, bridge.consumer = _FlakyProducer(failures=10**9), _FlakyConsumer()
    bridge.stop()
    with pytest.raises(BrokerLost, match="stopped while delivering a batch kept failing"):
        bridge._process([_Msg(0)])
    assert bridge.consumer.commits == []


def test_outage_backs_off_and_says_when_the_broker_is_back():
    from kafka.errors import NodeNotReadyError

    from sentictl.bridge.retry import Outage

    lines = []
    outage = Outage("polling for records", 30, lines.append)
    outage.failed(NodeNotReadyError("1"))
    outage.failed(NodeNotReadyError("1"))
    assert outage.delay == 1.0 and outage.tries == 2
    outage.recovered()
    assert not outage.active and len(lines) == 2
    assert "retrying for up to 30 s" in lines[0] and "the broker answers again" in lines[1]


def test_a_missing_codec_library_is_permanent_and_names_the_extra():
    """An input compressed with zstd and no zstandard installed: every poll fails alike, so the bridge
    must stop with one line naming the fix instead of retrying (and stalling) for ever."""
    from kafka import errors as e
    from sentictl.bridge.retry import describe, permanent

    exc = e.UnsupportedCodecError("Libraries for zstd compression codec not found")
    assert permanent(exc)
    assert "sentictl[kafka-compression]" in describe(exc)
