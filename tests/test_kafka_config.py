"""sentictl.kafka without a broker: one config and its validation, the shared options, topics, factories."""

from __future__ import annotations

import importlib.util

import click
import pytest
from click.testing import CliRunner

from sentictl.errors import BrokerUnavailable, KafkaConfigError, SentictlError, TopicError
from sentictl.kafka import (
    ConnectStopped,
    KafkaConfig,
    TopicTemplate,
    check_topic,
    connect_with_retry,
    is_legal_topic,
    make_consumer,
    make_producer,
    topic_problem,
)
from sentictl.kafka.options import ENV, config_from_options, kafka_options

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pem(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


# -- validation ---------------------------------------------------------------------------------

SASL = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="alice", sasl_password=SECRET)


@pytest.mark.parametrize(
    "kwargs, option, words",
    [
        (dict(bootstrap=""), "--bootstrap", "no Kafka bootstrap servers"),
        (dict(bootstrap=" , "), "--bootstrap", "no Kafka bootstrap servers"),
        (dict(bootstrap="broker:port"), "--bootstrap", "is not HOST:PORT"),
        (dict(bootstrap="broker:0"), "--bootstrap", "is not HOST:PORT"),
        (dict(bootstrap="ok:9092,broker:70000"), "--bootstrap", "'broker:70000' is not HOST:PORT"),
        (dict(client_id=" "), "--client-id", "is empty"),
        (dict(security_protocol="TLS"), "--security-protocol", "'TLS' is unknown: use PLAINTEXT, SSL"),
        (
            dict(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER"),
            "--sasl-mechanism",
            "'OAUTHBEARER' is not supported (kafka-python needs a token-provider object",
        ),
        (dict(security_protocol="SASL_SSL", sasl_mechanism="AWS_MSK_IAM"), "--sasl-mechanism", "is not supported"),
        (
            dict(sasl_mechanism="PLAIN", sasl_username="alice", sasl_password=SECRET),
            "--sasl-mechanism",
            "PLAIN needs --security-protocol SASL_PLAINTEXT or SASL_SSL (now PLAINTEXT)",
        ),
        (dict(security_protocol="SSL", sasl_mechanism="PLAIN"), "--sasl-mechanism", "(now SSL)"),
        (dict(security_protocol="SASL_PLAINTEXT"), "--security-protocol", "SASL_PLAINTEXT needs --sasl-mechanism"),
        ({**SASL, "sasl_username": None}, "--sasl-mechanism", "SCRAM-SHA-256 needs --sasl-username"),
        ({**SASL, "sasl_password": ""}, "--sasl-mechanism", "SCRAM-SHA-256 needs --sasl-password"),
        ({**SASL, "sasl_mechanism": "PLAIN", "sasl_username": ""}, "--sasl-mechanism", "PLAIN needs --sasl-username"),
        (dict(sasl_username="alice"), "--sasl-username", "needs --sasl-mechanism"),
        (dict(sasl_password=SECRET), "--sasl-password", "needs --sasl-mechanism"),
        (dict(ssl_cafile="CA"), "--ssl-cafile", "needs --security-protocol SSL or SASL_SSL (now PLAINTEXT)"),
        (
            dict(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_username="a",
                sasl_password=SECRET,
                ssl_certfile="CA",
            ),
            "--ssl-certfile",
            "needs --security-protocol SSL or SASL_SSL (now SASL_PLAINTEXT)",
        ),
        (dict(check_hostname=False), "--no-check-hostname", "needs --security-protocol SSL or SASL_SSL"),
        (dict(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem"), "--ssl-cafile", "no such file"),
        (
            dict(security_protocol="SSL", ssl_certfile="CA", ssl_keyfile="/nonexistent/key.pem"),
            "--ssl-keyfile",
            "no such file",
        ),
        (dict(security_protocol="SSL", ssl_keyfile="CA"), "--ssl-keyfile", "needs --ssl-certfile"),
        (dict(security_protocol="SSL", ssl_cafile="DIR"), "--ssl-cafile", "not a file"),
    ],
)
def test_each_invalid_setting_is_one_line_naming_its_option(kwargs, option, words, pem, tmp_path):
    kwargs = {"bootstrap": "localhost:9092", **kwargs}
    for key, value in kwargs.items():
        kwargs[key] = {"CA": pem, "DIR": str(tmp_path)}.get(value, value) if isinstance(value, str) else value
    with pytest.raises(KafkaConfigError) as info:
        KafkaConfig(**kwargs)
    message = str(info.value)
    assert isinstance(info.value, SentictlError)
    assert option in message, message
    assert words in message
    assert "\n" not in message and SECRET not in message


def test_protocol_and_mechanism_are_case_insensitive():
    config = KafkaConfig(
        " b1:9092 , b2 ",
        security_protocol="sasl_plaintext",
        sasl_mechanism="scram-sha-512",
        sasl_username="alice",
        sasl_password=SECRET,
    )
    assert config.security_protocol == "SASL_PLAINTEXT" and config.sasl_mechanism == "SCRAM-SHA-512"
    assert config.bootstrap == "b1:9092,b2" and config.servers == ["b1:9092", "b2"]
    assert KafkaConfig("[::1]:9092", security_protocol="Ssl").security_protocol == "SSL"


def test_client_kwargs_carry_only_what_applies(pem):
    assert KafkaConfig("localhost:9092").client_kwargs() == {
        "bootstrap_servers": ["localhost:9092"],
        "client_id": "sentictl",
        "security_protocol": "PLAINTEXT",
    }
    kwargs = KafkaConfig(
        "b:9093", client_id="me", ssl_cafile=pem, ssl_certfile=pem, ssl_keyfile=pem, check_hostname=False, **SASL
    ).client_kwargs()
    assert kwargs == {
        "bootstrap_servers": ["b:9093"],
        "client_id": "me",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
        "ssl_cafile": pem,
        "ssl_certfile": pem,
        "ssl_keyfile": pem,
        "ssl_check_hostname": False,
    }
    assert KafkaConfig("b", security_protocol="SSL").client_kwargs()["ssl_check_hostname"] is True


def test_gssapi_needs_its_package_and_no_password(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gssapi" else real(name, *a))
    with pytest.raises(KafkaConfigError, match="GSSAPI needs the Python package gssapi: pip install gssapi"):
        KafkaConfig("b:9092", security_protocol="SASL_SSL", sasl_mechanism="GSSAPI")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "gssapi" else real(name, *a))
    with pytest.raises(KafkaConfigError, match="--sasl-password does not apply to --sasl-mechanism GSSAPI"):
        KafkaConfig("b:9092", security_protocol="SASL_SSL", sasl_mechanism="gssapi", sasl_password=SECRET)
    kwargs = KafkaConfig("b:9092", security_protocol="SASL_SSL", sasl_mechanism="gssapi").client_kwargs()
    assert kwargs["sasl_mechanism"] == "GSSAPI" and "sasl_plain_username" not in kwargs


def test_the_password_never_shows():
    config = KafkaConfig("b:9092", **SASL)
    for text in (repr(config), str(config), config.describe(), repr([config]), f"{config}"):
        assert SECRET not in text
    assert "sasl_password='***'" in repr(config) and "alice" in config.describe()
    assert "sasl_password=None" in repr(KafkaConfig("b:9092"))


# -- options and environment --------------------------------------------------------------------


def command(bootstrap_default=None, needed_for=None):
    @click.command()
    @kafka_options(bootstrap_default=bootstrap_default, client_id_default="sentictl-test")
    def show(**opts):
        try:
            config = config_from_options(opts, needed_for=needed_for)
        except SentictlError as exc:  # what sentictl's click group does for every command
            raise click.ClickException(str(exc)) from None
        click.echo(repr(config))
        click.echo(sorted(config.client_kwargs().items()))

    return show


def invoke(cmd, args=(), env=None):
    return CliRunner().invoke(cmd, list(args), env=env)


def test_every_option_has_its_sentictl_kafka_variable_in_help():
    out = invoke(command(), ["--help"]).output
    for option, env in ENV.items():
        assert "--" + option.replace("_", "-") in out, option
        assert env in out and env.startswith("SENTICTL_KAFKA_"), env


def test_environment_fills_every_option(pem):
    env = {
        ENV["bootstrap"]: "b1:1,b2:2",
        ENV["client_id"]: "cid",
        ENV["security_protocol"]: "sasl_ssl",
        ENV["sasl_mechanism"]: "plain",
        ENV["sasl_username"]: "alice",
        ENV["sasl_password"]: SECRET,
        ENV["ssl_cafile"]: pem,
        ENV["ssl_certfile"]: pem,
        ENV["ssl_keyfile"]: pem,
        ENV["no_check_hostname"]: "1",
    }
    result = invoke(command(), env=env)
    assert result.exit_code == 0, result.output
    assert ("sasl_plain_password", SECRET) in eval(result.output.splitlines()[1])
    assert "bootstrap='b1:1,b2:2'" in result.output and "client_id='cid'" in result.output
    assert "check_hostname=False" in result.output and "SASL_SSL" in result.output
    # The command line beats the environment.
    result = invoke(command(), ["--bootstrap", "cli:9"], env={ENV["bootstrap"]: "env:9"})
    assert "bootstrap='cli:9'" in result.output


def test_bootstrap_default_and_missing_bootstrap():
    assert "bootstrap='localhost:9092'" in invoke(command("localhost:9092")).output
    result = invoke(command(needed_for="--publish"))
    assert result.exit_code == 1
    assert (
        "--publish needs --bootstrap HOST:PORT (or SENTICTL_KAFKA_BOOTSTRAP, or -X bootstrap.servers=" in result.output
    )
    assert "client_id='sentictl-test'" in invoke(command(), ["--bootstrap", "b:1"]).output


def test_invalid_options_give_one_line_and_exit_1():
    result = invoke(command(), ["--bootstrap", "b:1", "--security-protocol", "sasl_ssl"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --security-protocol SASL_SSL needs --sasl-mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or GSSAPI)"
    ]


# -- topics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("news", None),
        ("a.b_c-D9", None),
        ("x" * 249, None),
        ("", "it is empty"),
        (".", "reserved"),
        ("..", "reserved"),
        ("x" * 250, "over Kafka's limit of 249"),
        ("news feed", "' '"),
        ("news/feed", "'/'"),
        ("ünïcode", "'ï' 'ü'"),
        ("{label}", "'{' '}'"),
    ],
)
def test_topic_legality(name, problem):
    got = topic_problem(name)
    assert (got is None) == (problem is None) == is_legal_topic(name)
    if problem:
        assert problem in got
        with pytest.raises(TopicError, match="--dlq .* is not a valid Kafka topic name"):
            check_topic(name, "--dlq")
    else:
        assert check_topic(name) == name


def test_templates_render_and_check_every_topic_they_can_make():
    t = TopicTemplate("{topic}.{label}", allowed=("label", "topic"), option="--out")
    assert t.fields == ("topic", "label") and not t.fixed
    assert t.render(label="positive", topic="news", extra="ignored") == "news.positive"
    assert t.check(label=["positive", "negative"], topic=["news"]) == ["news.positive", "news.negative"]
    assert TopicTemplate("scored").fixed and TopicTemplate("scored").render(label="x") == "scored"
    assert TopicTemplate("{label}-{label}").fields == ("label",)
    with pytest.raises(TopicError, match=r"--publish 'x\{label\}' gives the invalid topic name 'x-a b'"):
        TopicTemplate("x{label}").check(label=["-a b"])


@pytest.mark.parametrize(
    "template, allowed, option, words",
    [
        ("{topic}-scored", ("label",), "--publish", "unknown placeholder {topic} (use {label}, e.g. '{label}-news')"),
        ("{lable}", ("label", "topic"), "--out", "unknown placeholder {lable} (use {label}, {topic}"),
        ("{}", ("label",), "--publish", "unknown placeholder {}"),
        ("{label!r}", ("label",), "--publish", "write plain {label}"),
        ("{label:>9}", ("label",), "--publish", "write plain {label}"),
        ("{label", ("label",), "--publish", "bad --publish template '{label'"),
        ("scored out", ("label",), "--out", "--out 'scored out' is not a valid Kafka topic name"),
    ],
)
def test_bad_templates(template, allowed, option, words):
    with pytest.raises(TopicError) as info:
        TopicTemplate(template, allowed=allowed, option=option)
    assert words in str(info.value) and "\n" not in str(info.value)


# -- clients ------------------------------------------------------------------------------------


def test_factories_apply_defaults_then_overrides(monkeypatch):
    import kafka

    made = {}
    monkeypatch.setattr(kafka, "KafkaProducer", lambda **kw: made.setdefault("producer", kw))
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda **kw: made.setdefault("consumer", kw))
    config = KafkaConfig("b:1", client_id="c")
    make_producer(config, linger_ms=50, transactional_id="t")
    make_consumer(config, group_id="g")
    assert made["producer"] == {
        "bootstrap_servers": ["b:1"],
        "client_id": "c",
        "security_protocol": "PLAINTEXT",
        "acks": "all",
        "linger_ms": 50,
        "transactional_id": "t",
    }
    assert made["consumer"]["enable_auto_commit"] is False and made["consumer"]["group_id"] == "g"


def test_factories_turn_kafka_python_settings_errors_into_one_line():
    with pytest.raises(KafkaConfigError, match="invalid Kafka client settings: .*no_such_setting"):
        make_producer(KafkaConfig("127.0.0.1:1"), no_such_setting=1)


def test_connect_with_retry_backs_off_then_gives_up_or_stops():
    from kafka.errors import KafkaConnectionError

    attempts, logs = [], []

    def down(timeout):
        attempts.append(timeout)
        raise KafkaConnectionError("connection refused")

    config = KafkaConfig("127.0.0.1:1")
    with pytest.raises(
        BrokerUnavailable,
        match=r"cannot reach the Kafka broker at 127.0.0.1:1 \(producer\) after "
        r"0.6 s and \d+ attempts: .*TLS/SASL options; try later$",
    ):
        connect_with_retry(down, config, what="producer", timeout=0.6, log=logs.append, hint="; try later")
    assert len(attempts) >= 2 and logs == ["waiting for the broker at 127.0.0.1:1 (up to 0.6 s)"]
    with pytest.raises(ConnectStopped):
        connect_with_retry(down, config, what="consumer", timeout=60, stopped=lambda: True)
    assert connect_with_retry(lambda t: "client", config, what="x", timeout=1) == "client"

    def bad(timeout):
        raise KafkaConfigError("invalid")

    attempts.clear()
    with pytest.raises(KafkaConfigError):
        connect_with_retry(bad, config, what="x", timeout=60)
