"""The Kafka connection options, one set for every command: same names, one SENTICTL_KAFKA_* prefix.

The options parse strings only; :func:`config_from_options` hands them to :class:`KafkaConfig`,
the one place that validates them, so a value from the command line or the environment meets
the same rules and the same messages.

Kafka users' own settings come in by their librdkafka/Java names, through ``-X NAME=VALUE``
(repeatable) and ``--kafka-config FILE`` (Java properties), mapped by :mod:`.properties`.
Precedence, highest first:

1. an option given on the command line (``--bootstrap``, ``--group``, ...): what was typed for
   this run;
2. ``-X name=value``: also typed for this run, in Kafka's names;
3. ``--kafka-config FILE``: a file the user points at for this run (the usual way to share one
   client configuration between tools);
4. ``SENTICTL_KAFKA_*`` (and a door's own ``SENTICTL_*``) variables: ambient, set once for a
   shell or a container, so a file named for the run beats them;
5. defaults (sentictl's, then kafka-python's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from .. import console
from ..errors import KafkaConfigError
from .config import DEFAULT_CLIENT_ID, OPTIONS, SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConfig
from .properties import NAME_OF, describe_properties, map_properties, merge
from .propfile import Given, parse_assignment, read_properties_file

F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "SENTICTL_KAFKA_"
# Parameter name → environment variable; the parameter names are the keys commands receive.
ENV = {
    "bootstrap": ENV_PREFIX + "BOOTSTRAP",
    "client_id": ENV_PREFIX + "CLIENT_ID",
    "security_protocol": ENV_PREFIX + "SECURITY_PROTOCOL",
    "sasl_mechanism": ENV_PREFIX + "SASL_MECHANISM",
    "sasl_username": ENV_PREFIX + "SASL_USERNAME",
    "sasl_password": ENV_PREFIX + "SASL_PASSWORD",
    "ssl_cafile": ENV_PREFIX + "SSL_CAFILE",
    "ssl_certfile": ENV_PREFIX + "SSL_CERTFILE",
    "ssl_keyfile": ENV_PREFIX + "SSL_KEYFILE",
    "no_check_hostname": ENV_PREFIX + "NO_CHECK_HOSTNAME",
    "kafka_config": ENV_PREFIX + "CONFIG",
}
# -X is repeatable and has no variable: a list of properties belongs in --kafka-config.
OPTION_NAMES = (*ENV, "kafka_properties")
_EXPLICIT = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.PROMPT)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One connection option: its flag, parameter name, metavar (None: a flag) and help ("{p}": the purpose)."""

    flag: str
    key: str
    metavar: str | None
    help: str


# In help order.
SPECS = (
    _Spec(
        "--bootstrap",
        "bootstrap",
        "HOST:PORT[,...]",
        "Kafka/Redpanda bootstrap servers{p}, e.g. --bootstrap broker1:9092,broker2:9092.",
    ),
    _Spec(
        "--client-id",
        "client_id",
        "NAME",
        "Client id the broker logs and applies quotas to, e.g. --client-id news-bridge-1.",
    ),
    _Spec(
        "--security-protocol",
        "security_protocol",
        "[" + "|".join(SECURITY_PROTOCOLS) + "]",
        "Transport security{p} (any case), e.g. --security-protocol SASL_SSL.",
    ),
    _Spec(
        "--sasl-mechanism",
        "sasl_mechanism",
        "[" + "|".join(SASL_MECHANISMS) + "]",
        "SASL mechanism{p}; needs SASL_PLAINTEXT or SASL_SSL, e.g. --sasl-mechanism SCRAM-SHA-512.",
    ),
    _Spec("--sasl-username", "sasl_username", "USER", "SASL user name (PLAIN, SCRAM)."),
    _Spec(
        "--sasl-password",
        "sasl_password",
        "PASSWORD",
        f"SASL password (PLAIN, SCRAM); prefer {ENV['sasl_password']}, which `ps` does not show.",
    ),
    _Spec(
        "--ssl-cafile", "ssl_cafile", "FILE", "CA bundle (PEM) that signed the broker's certificate (SSL, SASL_SSL)."
    ),
    _Spec("--ssl-certfile", "ssl_certfile", "FILE", "Client certificate (PEM) for mutual TLS."),
    _Spec("--ssl-keyfile", "ssl_keyfile", "FILE", "Private key (PEM) of --ssl-certfile."),
    _Spec(
        "--no-check-hostname",
        "no_check_hostname",
        None,
        "Accept a broker certificate whose name does not match the host (test clusters only).",
    ),
    _Spec(
        "-X",
        "kafka_properties",
        "NAME=VALUE",
        "Kafka client property{p} by its librdkafka/Java name (repeatable), e.g. -X compression.type=gzip "
        "-X linger.ms=20 -X acks=1; -X list shows every supported one. Beats --kafka-config; options given "
        "on the command line beat both.",
    ),
    _Spec(
        "--kafka-config",
        "kafka_config",
        "FILE",
        "Java-style properties file of Kafka client settings{p} (key=value or key: value, # comments), as "
        "other Kafka tools read it, e.g. --kafka-config client.properties holding bootstrap.servers, "
        "security.protocol, sasl.*, ssl.*, compression.type. Beats SENTICTL_KAFKA_* variables.",
    ),
)


def _option(spec: _Spec, default: Any, purpose: str) -> Callable[[F], F]:
    text = spec.help.replace("{p}", purpose)
    if spec.key == "kafka_properties":
        return click.option(
            spec.flag, spec.key, multiple=True, metavar=spec.metavar, callback=_check_properties, help=text
        )
    env = ENV[spec.key]
    if spec.metavar is None:
        return click.option(spec.flag, spec.key, envvar=env, show_envvar=True, is_flag=True, default=False, help=text)
    return click.option(
        spec.flag, spec.key, envvar=env, show_envvar=True, default=default, metavar=spec.metavar, help=text
    )


def kafka_options(
    *, bootstrap_default: str | None = None, client_id_default: str = DEFAULT_CLIENT_ID, purpose: str = ""
) -> Callable[[F], F]:
    """Add the Kafka connection options to a click command (values arrive under OPTION_NAMES).

    ``bootstrap_default=None`` leaves --bootstrap optional (serve needs it only with --publish);
    ``purpose`` ends each help text, e.g. " for --publish".
    """
    defaults = {"bootstrap": bootstrap_default, "client_id": client_id_default, "security_protocol": "PLAINTEXT"}
    options = [_option(spec, defaults.get(spec.key), purpose) for spec in SPECS]

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _check_properties(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """-X values must be NAME=VALUE (a usage error otherwise); ``-X list`` prints the supported properties."""
    if "list" in values:
        click.echo("Kafka properties sentictl maps onto kafka-python (name, side, what it sets):")
        click.echo(describe_properties())
        ctx.exit(0)
    for value in values:
        try:
            parse_assignment(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return values


def _explicit(ctx: click.Context | None, param: str, opts: Mapping[str, Any]) -> bool:
    """True when the option was given on the command line (without a click context: when it has a value)."""
    source = ctx.get_parameter_source(param) if ctx is not None else None
    if source is None:
        return bool(opts.get(param))
    return source in _EXPLICIT


def read_properties(opts: Mapping[str, Any]) -> dict[str, Given]:
    """The --kafka-config file's properties overlaid by -X's, one value per canonical name."""
    layers = []
    if opts.get("kafka_config"):
        layers.append(read_properties_file(opts["kafka_config"]))
    try:
        layers.append([parse_assignment(value) for value in opts.get("kafka_properties") or ()])
    except ValueError as exc:
        raise KafkaConfigError(f"-X {exc}") from None
    return merge(*layers)


def config_from_options(
    opts: Mapping[str, Any], *, needed_for: str | None = None, ctx: click.Context | None = None
) -> KafkaConfig:
    """The validated KafkaConfig for parsed kafka_options values, -X and --kafka-config (raises KafkaConfigError).

    Precedence is the module's: command line > -X > --kafka-config > environment > default, told
    apart with click's parameter sources (``ctx``, default: the current context; without one, an
    option with a value counts as given on the command line). ``needed_for`` names the option
    that requires a broker (e.g. "--publish") for the message shown when no bootstrap is given.
    """
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    mapped = map_properties(read_properties(opts))
    values: dict[str, Any] = {
        "bootstrap": opts.get("bootstrap"),
        "client_id": opts.get("client_id") or DEFAULT_CLIENT_ID,
        "security_protocol": opts.get("security_protocol") or "PLAINTEXT",
        "sasl_mechanism": opts.get("sasl_mechanism"),
        "sasl_username": opts.get("sasl_username"),
        "sasl_password": opts.get("sasl_password"),
        "ssl_cafile": opts.get("ssl_cafile"),
        "ssl_certfile": opts.get("ssl_certfile"),
        "ssl_keyfile": opts.get("ssl_keyfile"),
        "check_hostname": not opts.get("no_check_hostname"),
    }
    origins = dict(mapped.origins)
    for name, value in mapped.fields.items():
        param = "no_check_hostname" if name == "check_hostname" else name
        if not _explicit(ctx, param, opts):
            values[name] = value
            continue
        origins.pop(name, None)
        if values[name] != value:
            _notice_overridden(OPTIONS[name], mapped.origins[name])
    if not values["bootstrap"]:
        who = f"{needed_for} needs" if needed_for else "give"
        raise KafkaConfigError(
            f"{who} --bootstrap HOST:PORT (or {ENV['bootstrap']}, or -X bootstrap.servers=...), e.g. localhost:9092"
        )
    return KafkaConfig(
        **values,
        settings=mapped.common,
        producer_settings=mapped.producer,
        consumer_settings=mapped.consumer,
        origins=origins,
    )


def _notice_overridden(option: str, label: str) -> None:
    console.notice(f"{option} given on the command line wins over {label}")


def _option_name(ctx: click.Context | None, param: str) -> str:
    for candidate in ctx.command.params if ctx is not None else ():
        if candidate.name == param and candidate.opts:
            return max(candidate.opts, key=len)
    return "--" + param.replace("_", "-")


def door_options(
    opts: Mapping[str, Any], config: KafkaConfig, names: Mapping[str, str], *, ctx: click.Context | None = None
) -> tuple[dict[str, Any], KafkaConfig]:
    """A door's own options that a consumer property can also set (bridge: --group and group.id, ...).

    ``names`` maps the option's parameter name to the kafka-python argument. The same precedence
    as :func:`config_from_options`: an option given on the command line beats the property, the
    property beats the option's variable and default. Returns the options with the winning values
    and the config without those properties, so the door's value is the only one left.
    """
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    out, consumer = dict(opts), dict(config.consumer_settings)
    for param, kwarg in names.items():
        if kwarg not in consumer:
            continue
        value = consumer.pop(kwarg)
        if not _explicit(ctx, param, opts):
            out[param] = value
        elif opts.get(param) != value:
            _notice_overridden(_option_name(ctx, param), config.origins.get(kwarg, NAME_OF.get(kwarg, kwarg)))
    return out, dataclasses.replace(config, consumer_settings=consumer)
