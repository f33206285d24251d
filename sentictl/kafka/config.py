"""One Kafka connection configuration for every door that talks to a broker (bridge, serve --publish).

A :class:`KafkaConfig` is checked once, when it is made: an instance that exists can connect as
far as settings go (the broker may still be down). Messages name what the user wrote: the
command-line option, or the Kafka property and where it came from (``security.protocol (-X)``);
they never contain a password.

Besides the connection fields, a config carries kafka-python arguments from Kafka properties
(``-X``, ``--kafka-config``; see :mod:`sentictl.kafka.properties`): ``settings`` for both client
sides, ``producer_settings`` and ``consumer_settings`` for one side only.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import KafkaConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What kafka-python can use with the options sentictl offers. OAUTHBEARER needs a token-provider
# object and AWS_MSK_IAM AWS credentials: no option supplies either, so offering them would only
# fail later, at the first connection, with a less helpful message.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
UNSUPPORTED_MECHANISMS = {
    "OAUTHBEARER": "kafka-python needs a token-provider object for it, which no option or property can supply",
    "AWS_MSK_IAM": "sentictl does not hand AWS credentials to kafka-python",
}
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
DEFAULT_CLIENT_ID = "sentictl"
# The command-line option of each connection field, for messages about values that came from it.
OPTIONS = {
    "bootstrap": "--bootstrap",
    "client_id": "--client-id",
    "security_protocol": "--security-protocol",
    "sasl_mechanism": "--sasl-mechanism",
    "sasl_username": "--sasl-username",
    "sasl_password": "--sasl-password",
    "ssl_cafile": "--ssl-cafile",
    "ssl_certfile": "--ssl-certfile",
    "ssl_keyfile": "--ssl-keyfile",
    "check_hostname": "--no-check-hostname",
}
# kafka-python arguments (from properties) that only mean something over TLS.
TLS_SETTINGS = ("ssl_password", "ssl_crlfile", "ssl_ciphers")
SECRET_SETTINGS = ("ssl_password",)

# HOST, HOST:PORT or [IPv6]:PORT; kafka-python adds port 9092 when it is missing.
_SERVER = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/,]+)(?::(\d{1,5}))?$")


class _Hidden:
    def __repr__(self) -> str:
        return "'***'"


def _names(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and how to authenticate; validated and normalised on creation."""

    bootstrap: str
    client_id: str = DEFAULT_CLIENT_ID
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    check_hostname: bool = True
    # kafka-python arguments from Kafka properties: for both sides, the producer only, the consumer only.
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    producer_settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    consumer_settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # Field or argument → how the user gave it ("linger.ms (-X)"); absent: the command-line option.
    origins: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        given = self.bootstrap if isinstance(self.bootstrap, str) else ",".join(self.bootstrap or ())
        servers = [s.strip() for s in given.split(",") if s.strip()]
        protocol = (self.security_protocol or "PLAINTEXT").strip().upper()
        mechanism = (self.sasl_mechanism or "").strip().upper() or None
        empty_to_none = {name: getattr(self, name) or None for name in ("sasl_username", "sasl_password")}
        # Environment variables are not expanded by a shell, so '~/certs/ca.pem' arrives as written.
        empty_to_none.update(
            {
                name: os.path.expanduser(getattr(self, name)) if getattr(self, name) else None
                for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            }
        )
        for name, value in {
            "bootstrap": ",".join(servers),
            "security_protocol": protocol,
            "sasl_mechanism": mechanism,
            "client_id": (self.client_id or "").strip(),
            **empty_to_none,
        }.items():
            object.__setattr__(self, name, value)
        for name in ("settings", "producer_settings", "consumer_settings", "origins"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        self._validate(servers)

    def _name(self, key: str) -> str:
        """How a message names a field or argument: the property the user wrote, else the option."""
        return self.origins.get(key) or OPTIONS.get(key) or key

    def _ask(self, key: str) -> str:
        """What a message tells the user to set: the property name when they configure with properties."""
        from .properties import NAME_OF

        return NAME_OF.get(key, key) if self.origins else OPTIONS.get(key, key)

    def _validate(self, servers: list[str]) -> None:
        n, ask = self._name, self._ask
        if not servers:
            raise KafkaConfigError(
                "no Kafka bootstrap servers: give --bootstrap HOST:PORT "
                "(or SENTICTL_KAFKA_BOOTSTRAP, or bootstrap.servers), e.g. localhost:9092"
            )
        for server in servers:
            match = _SERVER.match(server)
            if not match or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
                raise KafkaConfigError(
                    f"{n('bootstrap')} {self.bootstrap!r}: {server!r} is not HOST:PORT "
                    f"(port 1-65535; several comma-separated), e.g. localhost:9092"
                )
        if not self.client_id:
            raise KafkaConfigError(
                f"{n('client_id')} is empty: give a name the broker's logs and quotas can use, "
                f"e.g. --client-id sentictl-bridge"
            )
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaConfigError(
                f"{n('security_protocol')} {protocol!r} is unknown: use {_names(SECURITY_PROTOCOLS)}"
            )
        if mechanism is not None and mechanism not in SASL_MECHANISMS:
            why = f" ({UNSUPPORTED_MECHANISMS[mechanism]})" if mechanism in UNSUPPORTED_MECHANISMS else ""
            raise KafkaConfigError(
                f"{n('sasl_mechanism')} {mechanism!r} is not supported{why}: use {_names(SASL_MECHANISMS)}"
            )
        if mechanism and protocol not in SASL_PROTOCOLS:
            raise KafkaConfigError(
                f"{n('sasl_mechanism')} {mechanism} needs {ask('security_protocol')} "
                f"SASL_PLAINTEXT or SASL_SSL (now {protocol})"
            )
        if protocol in SASL_PROTOCOLS and not mechanism:
            raise KafkaConfigError(
                f"{n('security_protocol')} {protocol} needs {ask('sasl_mechanism')} ({_names(SASL_MECHANISMS)})"
            )
        self._validate_credentials(mechanism)
        self._validate_tls(protocol)
        if self.settings.get("sasl_kerberos_service_name") and mechanism != "GSSAPI":
            raise KafkaConfigError(
                f"{n('sasl_kerberos_service_name')} only applies to {ask('sasl_mechanism')} "
                f"GSSAPI (now {mechanism or 'none'})"
            )

    def _validate_credentials(self, mechanism: str | None) -> None:
        n, ask = self._name, self._ask
        given = [n(key) for key in ("sasl_username", "sasl_password") if getattr(self, key)]
        if given and not mechanism:
            raise KafkaConfigError(
                f"{given[0]} needs {ask('sasl_mechanism')} ({_names(PASSWORD_MECHANISMS)}) "
                f"and {ask('security_protocol')} SASL_PLAINTEXT or SASL_SSL"
            )
        if mechanism in PASSWORD_MECHANISMS:
            if not self.sasl_username:
                raise KafkaConfigError(
                    f"{n('sasl_mechanism')} {mechanism} needs {ask('sasl_username')} (or SENTICTL_KAFKA_SASL_USERNAME)"
                )
            if not self.sasl_password:
                raise KafkaConfigError(
                    f"{n('sasl_mechanism')} {mechanism} needs {ask('sasl_password')}; prefer "
                    f"SENTICTL_KAFKA_SASL_PASSWORD, which other users cannot see in `ps`"
                )
        elif mechanism == "GSSAPI":
            if given:
                raise KafkaConfigError(
                    f"{given[0]} does not apply to {n('sasl_mechanism')} GSSAPI, which "
                    f"authenticates with your Kerberos ticket (kinit): drop it"
                )
            import importlib.util
            import platform

            module = "win32security" if platform.system() == "Windows" else "gssapi"
            if importlib.util.find_spec(module) is None:
                package = "pywin32" if module == "win32security" else "gssapi"
                raise KafkaConfigError(
                    f"{n('sasl_mechanism')} GSSAPI needs the Python package {package}: pip install {package}"
                )

    def _validate_tls(self, protocol: str) -> None:
        n, ask = self._name, self._ask
        files = [(n(key), getattr(self, key)) for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")]
        given = [name for name, value in files if value]
        if not self.check_hostname:
            given.append(n("check_hostname"))
        given += [n(key) for key in TLS_SETTINGS if self.settings.get(key)]
        if given and protocol not in TLS_PROTOCOLS:
            raise KafkaConfigError(
                f"{given[0]} needs {ask('security_protocol')} SSL or SASL_SSL (now {protocol}): "
                f"without TLS it would be silently ignored"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaConfigError(
                f"{n('ssl_keyfile')} needs {ask('ssl_certfile')}, the client certificate it belongs to"
            )
        if self.settings.get("ssl_password") and not self.ssl_keyfile:
            raise KafkaConfigError(f"{n('ssl_password')} needs {ask('ssl_keyfile')}, the encrypted key it unlocks")
        files.append((n("ssl_crlfile"), self.settings.get("ssl_crlfile")))
        for opt, path in files:
            if not path:
                continue
            if not os.path.exists(path):
                raise KafkaConfigError(f"{opt} {path}: no such file")
            if not os.path.isfile(path):
                raise KafkaConfigError(f"{opt} {path}: not a file (give the PEM file itself)")
            if not os.access(path, os.R_OK):
                raise KafkaConfigError(f"{opt} {path}: not readable by this user")

    def __repr__(self) -> str:
        # Secrets are shown as set or not, never their value: configs end up in logs and tracebacks.
        shown: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "origins"}
        if shown["sasl_password"] is not None:
            shown["sasl_password"] = _Hidden()
        for name in ("settings", "producer_settings", "consumer_settings"):
            if not shown[name]:
                del shown[name]
            else:
                shown[name] = {k: _Hidden() if k in SECRET_SETTINGS else v for k, v in shown[name].items()}
        return f"KafkaConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers, one entry per broker."""
        return self.bootstrap.split(",")

    def describe(self) -> str:
        """A short line for logs: the servers, how the client authenticates (never the password), compression."""
        how = self.security_protocol
        if self.sasl_mechanism:
            who = f" as {self.sasl_username}" if self.sasl_username else ""
            how += f", {self.sasl_mechanism}{who}"
        if self.producer_settings.get("compression_type"):
            how += f"; {self.producer_settings['compression_type']} compression"
        return f"{self.bootstrap} ({how})"

    def side_settings(self, side: str) -> dict[str, Any]:
        """kafka-python arguments from properties for "producer" or "consumer": both-side ones, then the side's own."""
        own = {"producer": self.producer_settings, "consumer": self.consumer_settings}[side]
        return {**self.settings, **own}

    def require(self, side: str, needed: Mapping[str, Any], because: str) -> None:
        """Refuse properties that contradict what a mode needs (e.g. isolation.level with --exactly-once)."""
        from .properties import NAME_OF

        have = self.side_settings(side)
        for key, value in needed.items():
            if key in have and have[key] != value:
                wanted = str(value).lower()
                raise KafkaConfigError(
                    f"{self._name(key)} {str(have[key]).lower()} cannot be used with {because}, "
                    f"which needs {NAME_OF.get(key, key)}={wanted}: drop it"
                )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient (contains the password).

        The connection fields and the both-side settings; the factories add each side's own.
        """
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism in PASSWORD_MECHANISMS:
                kwargs["sasl_plain_username"] = self.sasl_username
                kwargs["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in TLS_PROTOCOLS:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name):
                    kwargs[name] = getattr(self, name)
            kwargs["ssl_check_hostname"] = self.check_hostname
        kwargs.update(self.settings)
        return kwargs
