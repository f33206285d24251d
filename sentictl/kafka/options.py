"""The Kafka connection options, one set for every command: same names, one SENTICTL_KAFKA_* prefix.

The options parse strings only; :func:`config_from_options` hands them to :class:`KafkaConfig`,
the one place that validates them, so a value from the command line, the environment or a
deprecated variable meets the same rules and the same messages.

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
import os
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
# `serve --publish` read these until the Kafka options were unified; honoured for one release.
LEGACY_SERVE_ENV = {
    "bootstrap": "SENTICTL_BOOTSTRAP",
    "security_protocol": "SENTICTL_SECURITY_PROTOCOL",
    "sasl_mechanism": "SENTICTL_SASL_MECHANISM",
    "sasl_username": "SENTICTL_SASL_USERNAME",
    "sasl_password": "SENTICTL_SASL_PASSWORD",
    "ssl_cafile": "SENTICTL_SSL_CAFILE",
}


def _option(*names: str, key: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*names, key, envvar=ENV[key], show_envvar=True, **kwargs)


def kafka_options(
    *, bootstrap_default: str | None = None, client_id_default: str = DEFAULT_CLIENT_ID, purpose: str = ""
) -> Callable[[F], F]:
    """Add the Kafka connection options to a click command (values arrive under OPTION_NAMES).

    ``bootstrap_default=None`` leaves --bootstrap optional (serve needs it only with --publish);
    ``purpose`` ends each help text, e.g. " for --publish".
    """
    p = purpose
    options = [
        _option(
            "--bootstrap",
            key="bootstrap",
            default=bootstrap_default,
            metavar="HOST:PORT[,...]",
            help=f"Kafka/Redpanda bootstrap servers{p}, e.g. --bootstrap broker1:9092,broker2:9092.",
        ),
        _option(
            "--client-id",
            key="client_id",
            default=client_id_default,
            metavar="NAME",
            help="Client id the broker logs and applies quotas to, e.g. --client-id news-bridge-1.",
        ),
        _option(
            "--security-protocol",
            key="security_protocol",
            default="PLAINTEXT",
            metavar="[" + "|".join(SECURITY_PROTOCOLS) + "]",
            help=f"Transport security{p} (any case), e.g. --security-protocol SASL_SSL.",
        ),
        _option(
            "--sasl-mechanism",
            key="sasl_mechanism",
            default=None,
            metavar="[" + "|".join(SASL_MECHANISMS) + "]",
            help=f"SASL mechanism{p}; needs SASL_PLAINTEXT or SASL_SSL, e.g. --sasl-mechanism SCRAM-SHA-512.",
        ),
        _option(
            "--sasl-username", key="sasl_username", default=None, metavar="USER", help="SASL user name (PLAIN, SCRAM)."
        ),
        _option(
            "--sasl-password",
            key="sasl_password",
            default=None,
            metavar="PASSWORD",
            help=f"SASL password (PLAIN, SCRAM); prefer {ENV['sasl_password']}, which `ps` does not show.",
        ),
        _option(
            "--ssl-cafile",
            key="ssl_cafile",
            default=None,
            metavar="FILE",
            help="CA bundle (PEM) that signed the broker's certificate (SSL, SASL_SSL).",
        ),
        _option(
            "--ssl-certfile",
            key="ssl_certfile",
            default=None,
            metavar="FILE",
            help="Client certificate (PEM) for mutual TLS.",
        ),
        _option(
            "--ssl-keyfile",
            key="ssl_keyfile",
            default=None,
            metavar="FILE",
            help="Private key (PEM) of --ssl-certfile.",
        ),
        _option(
            "--no-check-hostname",
            key="no_check_hostname",
            is_flag=True,
            default=False,
            help="Accept a broker certificate whose name does not match the host (test clusters only).",
        ),
        click.option(
            "-X",
            "kafka_properties",
            multiple=True,
            metavar="NAME=VALUE",
            callback=_check_properties,
            help=f"Kafka client property{p} by its librdkafka/Java name (repeatable), e.g. "
            "-X compression.type=gzip -X linger.ms=20 -X acks=1; -X list shows every supported "
            "one. Beats --kafka-config; options given on the command line beat both.",
        ),
        _option(
            "--kafka-config",
            key="kafka_config",
            default=None,
            metavar="FILE",
            help=f"Java-style properties file of Kafka client settings{p} (key=value or key: value, "
            "# comments), as other Kafka tools read it, e.g. --kafka-config client.properties holding "
            "bootstrap.servers, security.protocol, sasl.*, ssl.*, compression.type. Beats "
            "SENTICTL_KAFKA_* variables.",
        ),
    ]

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


def apply_legacy_env(
    opts: Mapping[str, Any],
    *,
    ctx: click.Context | None = None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = console.notice,
) -> dict[str, Any]:
    """Options with serve's deprecated SENTICTL_BOOTSTRAP/SASL_*/... filled in where nothing newer is set.

    A deprecated variable counts only when its option came neither from the command line nor
    from its SENTICTL_KAFKA_* variable; either way a set one earns a notice on stderr.
    """
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    environ = os.environ if environ is None else environ
    out = dict(opts)
    for key, old in LEGACY_SERVE_ENV.items():
        value = environ.get(old)
        if not value:
            continue
        source = ctx.get_parameter_source(key) if ctx is not None else None
        if source is None:
            winner = ENV[key] if environ.get(ENV[key]) else None
        elif source in (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP):
            winner = None
        else:
            option = "--" + key.replace("_", "-")
            winner = ENV[key] if source == click.core.ParameterSource.ENVIRONMENT else option
        if winner:
            warn(f"{old} is deprecated and ignored because {winner} is set: unset {old}")
        else:
            out[key] = value
            warn(f"{old} is deprecated and will stop working in the next release: rename it to {ENV[key]}")
    return out
