"""`sentictl bridge` pieces that need no broker: record parsing, templates, enrichment, the CLI surface."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from sentictl.bridge import Bridge, BridgeError, BridgeSettings, Poison, check_template, enrich, extract
from sentictl.cli import cli


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
def test_extract_poison_kinds(value, fmt, kind):
    got = extract(value, fmt, "text", max_chars=10)
    assert isinstance(got, Poison)
    assert got.kind == kind
    assert got.message


def test_extract_good_records_and_nested_field():
    assert extract("Gewinn über Erwartung".encode(), "raw", "text", 100) == ("Gewinn über Erwartung", None)
    text, obj = extract(b'{"a": {"b": "Shares fell"}, "id": 3}', "json", "a.b", 100)
    assert text == "Shares fell"
    assert obj == {"a": {"b": "Shares fell"}, "id": 3}


def test_enrich_raw_and_json():
    result = {"text": "t", "label": "positive", "score": 0.9, "scores": {}, "model": "m", "cache_hit": False}
    assert orjson.loads(enrich(result, None)) == result
    out = orjson.loads(enrich(result, {"id": 1, "text": "t"}))
    assert out["id"] == 1 and out["text"] == "t"
    assert out["sentiment"]["label"] == "positive" and "text" not in out["sentiment"]


def test_check_template():
    assert check_template("scored") == []
    assert check_template("{label}-news") == ["label"]
    assert check_template("{topic}.{label}") == ["topic", "label"]
    with pytest.raises(BridgeError, match="unknown placeholder {lable}"):
        check_template("{lable}-news")
    with pytest.raises(BridgeError, match="bad --out template"):
        check_template("{label")


class _FakeModel:
    fingerprint = "f" * 16
    name = "fake:fp32"


def test_output_topic_equal_to_input_is_refused():
    with pytest.raises(BridgeError, match="consume its own output"):
        Bridge(_FakeModel(), None, BridgeSettings(inputs=["news"], out="news"))


def test_exactly_once_refused_on_a_broker_without_transactions():
    bridge = Bridge(_FakeModel(), None, BridgeSettings(inputs=["news"], out="scored", exactly_once=True))

    class OldProducer:
        config = {"api_version": (0, 10, 2)}

        def init_transactions(self):
            raise AssertionError("must not be called on a pre-0.11 broker")

    bridge.producer = OldProducer()
    with pytest.raises(BridgeError, match="no transactions .*run without --exactly-once"):
        bridge._init_transactions()


def test_help_shows_every_option_with_env_and_examples():
    out = CliRunner().invoke(cli, ["bridge", "--help"], catch_exceptions=False).output
    for needle in ("--in", "--out", "--bootstrap", "--group", "--dlq", "--input", "--field", "--batch-size",
                   "--exactly-once", "--max-messages", "--idle-timeout", "--connect-timeout",
                   "--session-timeout-ms", "--security-protocol", "--sasl-mechanism", "--ssl-cafile",
                   "--metrics-port", "SENTICTL_BRIDGE_IN", "SENTICTL_KAFKA_BOOTSTRAP", "Examples:"):
        assert needle in out, needle


def test_missing_required_options_is_a_usage_error():
    result = CliRunner().invoke(cli, ["bridge", "--out", "x"])
    assert result.exit_code == 2
    assert "--in" in result.output
