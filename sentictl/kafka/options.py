"""The Kafka connection options, one set for every command: same names, one SENTICTL_KAFKA_* prefix.

The options parse strings only; :func:`config_from_options` hands them to :class:`KafkaConfig`,
the one place that validates them, so a value from the command line, the environment or a
deprecated variable meets the same rules and the same messages.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, TypeVar

import click

from .. import console
from ..errors import KafkaConfigError
from .config import DEFAULT_CLIENT_ID, SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConfig

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
}
OPTION_NAMES = tuple(ENV)
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


def kafka_options(*, bootstrap_default: str | None = None, client_id_default: str = DEFAULT_CLIENT_ID,
                  purpose: str = "") -> Callable[[F], F]:
    """Add the Kafka connection options to a click command (values arrive under OPTION_NAMES).

    ``bootstrap_default=None`` leaves --bootstrap optional (serve needs it only with --publish);
    ``purpose`` ends each help text, e.g. " for --publish".
    """
    p = purpose
    options = [
        _option("--bootstrap", key="bootstrap", default=bootstrap_default, metavar="HOST:PORT[,...]",
                help=f"Kafka/Redpanda bootstrap servers{p}, e.g. --bootstrap broker1:9092,broker2:9092."),
        _option("--client-id", key="client_id", default=client_id_default, metavar="NAME",
                help="Client id the broker logs and applies quotas to, e.g. --client-id news-bridge-1."),
        _option("--security-protocol", key="security_protocol", default="PLAINTEXT",
                metavar="[" + "|".join(SECURITY_PROTOCOLS) + "]",
                help=f"Transport security{p} (any case), e.g. --security-protocol SASL_SSL."),
        _option("--sasl-mechanism", key="sasl_mechanism", default=None, metavar="[" + "|".join(SASL_MECHANISMS) + "]",
                help=f"SASL mechanism{p}; needs SASL_PLAINTEXT or SASL_SSL, e.g. --sasl-mechanism SCRAM-SHA-512."),
        _option("--sasl-username", key="sasl_username", default=None, metavar="USER",
                help="SASL user name (PLAIN, SCRAM)."),
        _option("--sasl-password", key="sasl_password", default=None, metavar="PASSWORD",
                help=f"SASL password (PLAIN, SCRAM); prefer {ENV['sasl_password']}, which `ps` does not show."),
        _option("--ssl-cafile", key="ssl_cafile", default=None, metavar="FILE",
                help="CA bundle (PEM) that signed the broker's certificate (SSL, SASL_SSL)."),
        _option("--ssl-certfile", key="ssl_certfile", default=None, metavar="FILE",
                help="Client certificate (PEM) for mutual TLS."),
        _option("--ssl-keyfile", key="ssl_keyfile", default=None, metavar="FILE",
                help="Private key (PEM) of --ssl-certfile."),
        _option("--no-check-hostname", key="no_check_hostname", is_flag=True, default=False,
                help="Accept a broker certificate whose name does not match the host (test clusters only)."),
    ]

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def config_from_options(opts: Mapping[str, Any], *, needed_for: str | None = None) -> KafkaConfig:
    """The validated KafkaConfig for parsed kafka_options values (raises KafkaConfigError).

    ``needed_for`` names the option that requires a broker (e.g. "--publish") for the message
    shown when --bootstrap is missing.
    """
    if not opts.get("bootstrap"):
        who = f"{needed_for} needs" if needed_for else "give"
        raise KafkaConfigError(f"{who} --bootstrap HOST:PORT (or {ENV['bootstrap']}), e.g. localhost:9092")
    return KafkaConfig(
        bootstrap=opts["bootstrap"],
        client_id=opts.get("client_id") or DEFAULT_CLIENT_ID,
        security_protocol=opts.get("security_protocol") or "PLAINTEXT",
        sasl_mechanism=opts.get("sasl_mechanism"),
        sasl_username=opts.get("sasl_username"),
        sasl_password=opts.get("sasl_password"),
        ssl_cafile=opts.get("ssl_cafile"),
        ssl_certfile=opts.get("ssl_certfile"),
        ssl_keyfile=opts.get("ssl_keyfile"),
        check_hostname=not opts.get("no_check_hostname"),
    )


def apply_legacy_env(opts: Mapping[str, Any], *, ctx: click.Context | None = None,
                     environ: Mapping[str, str] | None = None,
                     warn: Callable[[str], None] = console.notice) -> dict[str, Any]:
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
