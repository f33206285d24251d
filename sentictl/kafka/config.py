"""One Kafka connection configuration for every door that talks to a broker (bridge, serve --publish).

A :class:`KafkaConfig` is checked once, when it is made: an instance that exists can connect as
far as settings go (the broker may still be down). Messages name the command-line option, since
that is what a user changes; they never contain the SASL password.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import KafkaConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What kafka-python can use with the options sentictl offers. OAUTHBEARER needs a token-provider
# object and AWS_MSK_IAM AWS credentials: no option supplies either, so offering them would only
# fail later, at the first connection, with a less helpful message.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
DEFAULT_CLIENT_ID = "sentictl"

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

    def __post_init__(self) -> None:
        given = self.bootstrap if isinstance(self.bootstrap, str) else ",".join(self.bootstrap or ())
        servers = [s.strip() for s in given.split(",") if s.strip()]
        protocol = (self.security_protocol or "PLAINTEXT").strip().upper()
        mechanism = (self.sasl_mechanism or "").strip().upper() or None
        empty_to_none = {name: getattr(self, name) or None for name in ("sasl_username", "sasl_password")}
        # Environment variables are not expanded by a shell, so '~/certs/ca.pem' arrives as written.
        empty_to_none.update({name: os.path.expanduser(getattr(self, name)) if getattr(self, name) else None
                              for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")})
        for name, value in {"bootstrap": ",".join(servers), "security_protocol": protocol,
                            "sasl_mechanism": mechanism, "client_id": (self.client_id or "").strip(),
                            **empty_to_none}.items():
            object.__setattr__(self, name, value)
        self._validate(servers)

    def _validate(self, servers: list[str]) -> None:
        if not servers:
            raise KafkaConfigError("no Kafka bootstrap servers: give --bootstrap HOST:PORT "
                                   "(or SENTICTL_KAFKA_BOOTSTRAP), e.g. localhost:9092")
        for server in servers:
            match = _SERVER.match(server)
            if not match or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
                raise KafkaConfigError(f"--bootstrap {self.bootstrap!r}: {server!r} is not HOST:PORT "
                                       f"(port 1-65535; several comma-separated), e.g. localhost:9092")
        if not self.client_id:
            raise KafkaConfigError("--client-id is empty: give a name the broker's logs and quotas can use, "
                                   "e.g. --client-id sentictl-bridge")
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaConfigError(f"--security-protocol {protocol!r} is unknown: use {_names(SECURITY_PROTOCOLS)}")
        if mechanism is not None and mechanism not in SASL_MECHANISMS:
            why = " (it needs a token provider, which no option supplies)" if mechanism == "OAUTHBEARER" else ""
            raise KafkaConfigError(f"--sasl-mechanism {mechanism!r} is not supported{why}: "
                                   f"use {_names(SASL_MECHANISMS)}")
        if mechanism and protocol not in SASL_PROTOCOLS:
            raise KafkaConfigError(f"--sasl-mechanism {mechanism} needs --security-protocol SASL_PLAINTEXT "
                                   f"or SASL_SSL (now {protocol})")
        if protocol in SASL_PROTOCOLS and not mechanism:
            raise KafkaConfigError(f"--security-protocol {protocol} needs --sasl-mechanism "
                                   f"({_names(SASL_MECHANISMS)})")
        self._validate_credentials(mechanism)
        self._validate_tls(protocol)

    def _validate_credentials(self, mechanism: str | None) -> None:
        given = [opt for opt, value in (("--sasl-username", self.sasl_username),
                                        ("--sasl-password", self.sasl_password)) if value]
        if given and not mechanism:
            raise KafkaConfigError(f"{given[0]} needs --sasl-mechanism ({_names(PASSWORD_MECHANISMS)}) and "
                                   f"--security-protocol SASL_PLAINTEXT or SASL_SSL")
        if mechanism in PASSWORD_MECHANISMS:
            if not self.sasl_username:
                raise KafkaConfigError(f"--sasl-mechanism {mechanism} needs --sasl-username "
                                       f"(or SENTICTL_KAFKA_SASL_USERNAME)")
            if not self.sasl_password:
                raise KafkaConfigError(f"--sasl-mechanism {mechanism} needs --sasl-password; prefer "
                                       f"SENTICTL_KAFKA_SASL_PASSWORD, which other users cannot see in `ps`")
        elif mechanism == "GSSAPI":
            if given:
                raise KafkaConfigError(f"{given[0]} does not apply to --sasl-mechanism GSSAPI, which "
                                       f"authenticates with your Kerberos ticket (kinit): drop it")
            import importlib.util
            import platform

            module = "win32security" if platform.system() == "Windows" else "gssapi"
            if importlib.util.find_spec(module) is None:
                package = "pywin32" if module == "win32security" else "gssapi"
                raise KafkaConfigError(f"--sasl-mechanism GSSAPI needs the Python package {package}: "
                                       f"pip install {package}")

    def _validate_tls(self, protocol: str) -> None:
        files = (("--ssl-cafile", self.ssl_cafile), ("--ssl-certfile", self.ssl_certfile),
                 ("--ssl-keyfile", self.ssl_keyfile))
        given = [opt for opt, value in files if value]
        if not self.check_hostname:
            given.append("--no-check-hostname")
        if given and protocol not in TLS_PROTOCOLS:
            raise KafkaConfigError(f"{given[0]} needs --security-protocol SSL or SASL_SSL (now {protocol}): "
                                   f"without TLS it would be silently ignored")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaConfigError("--ssl-keyfile needs --ssl-certfile, the client certificate it belongs to")
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
        # The password is shown as set or not, never its value: configs end up in logs and tracebacks.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if shown["sasl_password"] is not None:
            shown["sasl_password"] = _Hidden()
        return f"KafkaConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers, one entry per broker."""
        return self.bootstrap.split(",")

    def describe(self) -> str:
        """A short line for logs: the servers and how the client authenticates (never the password)."""
        how = self.security_protocol
        if self.sasl_mechanism:
            who = f" as {self.sasl_username}" if self.sasl_username else ""
            how += f", {self.sasl_mechanism}{who}"
        return f"{self.bootstrap} ({how})"

    def with_client_id(self, client_id: str) -> KafkaConfig:
        """The same connection under another client id (e.g. one per producer)."""
        return dataclasses.replace(self, client_id=client_id)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient (contains the password)."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.servers, "client_id": self.client_id,
                                  "security_protocol": self.security_protocol}
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
        return kwargs
