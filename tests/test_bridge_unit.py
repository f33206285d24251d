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


@pytest.mark.parametrize("settings, match", [
    (dict(inputs=["news"], out="{label}/news"), "--out '{label}/news' gives the invalid topic name 'positive/news'"),
    (dict(inputs=["news"], out="scored out"), "--out 'scored out' is not a valid Kafka topic name"),
    (dict(inputs=["news!"], out="scored"), "--in 'news!' is not a valid Kafka topic name"),
    (dict(inputs=["news"], out="scored", dlq=".."), "--dlq '..' is not a valid Kafka topic name"),
    (dict(inputs=["news"], out="scored", dlq="news"), "--dlq 'news' is also an input topic"),
    (dict(inputs=["news"], out="{topic}" + "x" * 248), "over Kafka's limit of 249"),
])
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
    for needle in ("--in", "--out", "--bootstrap", "--group", "--dlq", "--input", "--field", "--batch-size",
                   "--exactly-once", "--max-messages", "--idle-timeout", "--connect-timeout",
                   "--session-timeout-ms", "--security-protocol", "--sasl-mechanism", "--ssl-cafile",
                   "--metrics-port", "SENTICTL_BRIDGE_IN", "SENTICTL_KAFKA_BOOTSTRAP", "Examples:",
                   "--client-id", "--sasl-username", "--sasl-password", "--ssl-certfile", "--ssl-keyfile",
                   "--no-check-hostname", "SENTICTL_KAFKA_SASL_PASSWORD", "SENTICTL_KAFKA_SECURITY_PROTOCOL"):
        assert needle in out, needle
    assert "OAUTHBEARER" not in out


@pytest.mark.parametrize("args, message", [
    (["--sasl-mechanism", "OAUTHBEARER", "--security-protocol", "SASL_SSL"], "--sasl-mechanism 'OAUTHBEARER' is not supported"),
    (["--security-protocol", "sasl_plaintext"], "--security-protocol SASL_PLAINTEXT needs --sasl-mechanism"),
    (["--sasl-mechanism", "plain"], "--sasl-mechanism PLAIN needs --security-protocol SASL_PLAINTEXT or SASL_SSL"),
    (["--ssl-cafile", "/nonexistent/ca.pem", "--security-protocol", "SSL"], "--ssl-cafile /nonexistent/ca.pem: no such file"),
])
def test_invalid_kafka_settings_exit_1_before_loading_the_model(args, message):
    result = CliRunner().invoke(cli, ["bridge", "--in", "news", "--out", "scored", "--model-dir", "/nonexistent", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_required_options_is_a_usage_error():
    result = CliRunner().invoke(cli, ["bridge", "--out", "x"])
    assert result.exit_code == 2
    assert "--in" in result.output
