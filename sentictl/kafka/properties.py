"""Kafka client properties as Kafka users write them (librdkafka and Java names), mapped onto kafka-python.

``-X name=value`` and ``--kafka-config FILE`` (Java properties format) both arrive here as
:class:`~sentictl.kafka.propfile.Given` values; :func:`map_properties` turns them into the connection fields of
:class:`~sentictl.kafka.config.KafkaConfig` and kafka-python keyword arguments for both client
sides, or into one line naming the property and why it cannot be used. Properties that only
apply to a producer or a consumer go to that side only. Standard library only: this runs before
any client (and kafka-python) is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import KafkaConfigError
from . import values as v
from .propfile import Given
from .refused import HARMLESS, KERBEROS, MANAGED, OAUTH, unsupported

# Values never echoed in a message.
SECRETS = frozenset({"sasl.password", "ssl.key.password", "sasl.jaas.config"})


@dataclass(frozen=True)
class Property:
    """A supported property: which side it applies to and the kafka-python argument (or config field) it sets."""

    name: str
    side: str  # "connection" (a KafkaConfig field), "both", "producer" or "consumer"
    target: str
    parse: Callable[[str], Any]
    aliases: tuple[str, ...] = ()


# -- the table ----------------------------------------------------------------------------------


def _p(name: str, side: str, target: str, parse: Callable[[str], Any], *aliases: str) -> Property:
    return Property(name, side, target, parse, aliases)


_ms, _count, _positive = v.whole(0), v.whole(0), v.whole(1)
PROPERTIES: tuple[Property, ...] = (
    # Connection: the same fields as --bootstrap, --security-protocol, --sasl-*, --ssl-* (KafkaConfig checks them).
    _p("bootstrap.servers", "connection", "bootstrap", v.text, "metadata.broker.list"),
    _p("client.id", "connection", "client_id", v.text),
    _p("security.protocol", "connection", "security_protocol", v.text),
    _p("sasl.mechanism", "connection", "sasl_mechanism", v.text, "sasl.mechanisms"),
    _p("sasl.username", "connection", "sasl_username", v.secret, "sasl.plain.username"),
    _p("sasl.password", "connection", "sasl_password", v.secret, "sasl.plain.password"),
    _p("sasl.jaas.config", "connection", "sasl_username+sasl_password", v.secret),
    _p("ssl.ca.location", "connection", "ssl_cafile", v.path),
    _p("ssl.certificate.location", "connection", "ssl_certfile", v.path),
    _p("ssl.key.location", "connection", "ssl_keyfile", v.path),
    _p("ssl.endpoint.identification.algorithm", "connection", "check_hostname", v.endpoint_check),
    # Both sides.
    _p("ssl.key.password", "both", "ssl_password", v.secret),
    _p("ssl.crl.location", "both", "ssl_crlfile", v.path),
    _p("ssl.cipher.suites", "both", "ssl_ciphers", v.text),
    _p("sasl.kerberos.service.name", "both", "sasl_kerberos_service_name", v.text),
    _p("request.timeout.ms", "both", "request_timeout_ms", _positive),
    _p("metadata.max.age.ms", "both", "metadata_max_age_ms", _ms, "topic.metadata.refresh.interval.ms"),
    _p("reconnect.backoff.ms", "both", "reconnect_backoff_ms", _ms),
    _p("reconnect.backoff.max.ms", "both", "reconnect_backoff_max_ms", _ms),
    _p("retry.backoff.ms", "both", "retry_backoff_ms", _ms),
    _p("connections.max.idle.ms", "both", "connections_max_idle_ms", _positive),
    _p(
        "max.in.flight.requests.per.connection",
        "both",
        "max_in_flight_requests_per_connection",
        _positive,
        "max.in.flight",
    ),
    _p("receive.message.max.bytes", "both", "receive_message_max_bytes", _positive),
    _p("socket.send.buffer.bytes", "both", "send_buffer_bytes", v.buffer, "send.buffer.bytes"),
    _p("socket.receive.buffer.bytes", "both", "receive_buffer_bytes", v.buffer, "receive.buffer.bytes"),
    _p("socket.keepalive.enable", "both", "socket_options", v.boolean),
    _p("socket.nagle.disable", "both", "socket_options", v.boolean),
    _p(
        "client.dns.lookup",
        "both",
        "client_dns_lookup",
        v.choice("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only"),
    ),
    _p("allow.auto.create.topics", "both", "allow_auto_create_topics", v.boolean),
    _p("metrics.num.samples", "both", "metrics_num_samples", _positive),
    _p("metrics.sample.window.ms", "both", "metrics_sample_window_ms", _positive),
    # Producer.
    _p("acks", "producer", "acks", v.acks, "request.required.acks"),
    _p("compression.type", "producer", "compression_type", v.compression, "compression.codec"),
    _p("linger.ms", "producer", "linger_ms", _ms, "queue.buffering.max.ms"),
    _p("batch.size", "producer", "batch_size", _positive),
    _p("enable.idempotence", "producer", "enable_idempotence", v.boolean),
    _p("retries", "producer", "retries", _count, "message.send.max.retries"),
    _p("delivery.timeout.ms", "producer", "delivery_timeout_ms", _positive, "message.timeout.ms"),
    _p("message.max.bytes", "producer", "max_request_size", _positive, "max.request.size"),
    _p("max.block.ms", "producer", "max_block_ms", _ms),
    _p("transaction.timeout.ms", "producer", "transaction_timeout_ms", _positive),
    # Consumer.
    _p("group.id", "consumer", "group_id", v.text),
    _p("group.instance.id", "consumer", "group_instance_id", v.text),
    _p("session.timeout.ms", "consumer", "session_timeout_ms", _positive),
    _p("heartbeat.interval.ms", "consumer", "heartbeat_interval_ms", _positive),
    _p("max.poll.interval.ms", "consumer", "max_poll_interval_ms", _positive),
    _p("max.poll.records", "consumer", "max_poll_records", _positive),
    _p("auto.offset.reset", "consumer", "auto_offset_reset", v.offset_reset),
    _p("isolation.level", "consumer", "isolation_level", v.choice("read_committed", "read_uncommitted")),
    _p("fetch.min.bytes", "consumer", "fetch_min_bytes", _positive),
    _p("fetch.max.bytes", "consumer", "fetch_max_bytes", _positive),
    _p("fetch.max.wait.ms", "consumer", "fetch_max_wait_ms", _ms, "fetch.wait.max.ms"),
    _p("max.partition.fetch.bytes", "consumer", "max_partition_fetch_bytes", _positive, "fetch.message.max.bytes"),
    _p("partition.assignment.strategy", "consumer", "partition_assignment_strategy", v.assignors),
    _p("check.crcs", "consumer", "check_crcs", v.boolean),
    _p("client.rack", "consumer", "client_rack", v.text),
    _p("exclude.internal.topics", "consumer", "exclude_internal_topics", v.boolean),
)
BY_NAME: dict[str, Property] = {p.name: p for p in PROPERTIES}
ALIASES: dict[str, str] = {alias: p.name for p in PROPERTIES for alias in p.aliases}
# kafka-python argument (or config field) → the property name messages use for it.
NAME_OF: dict[str, str] = {p.target: p.name for p in PROPERTIES if p.target != "socket_options"}


# -- mapping ------------------------------------------------------------------------------------


@dataclass
class Mapped:
    """Properties turned into KafkaConfig fields and kafka-python arguments, with where each came from."""

    fields: dict[str, Any] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # field or argument → the property's label

    def side(self, name: str) -> dict[str, Any]:
        return {"connection": self.fields, "both": self.common, "producer": self.producer, "consumer": self.consumer}[
            name
        ]


def _shown(name: str, value: str) -> str:
    return "'***'" if name in SECRETS else repr(value)


def canonical(name: str) -> str:
    """The property's canonical name (librdkafka aliases resolved); names are case-sensitive, as in Kafka."""
    return ALIASES.get(name, name)


def merge(*layers: Iterable[tuple[str, Given]]) -> dict[str, Given]:
    """Layers from lowest to highest precedence → one value per canonical name (later wins, also within a layer).

    Two spellings of one property in the same layer (``linger.ms`` and ``queue.buffering.max.ms`` in one
    file) are refused: which one was meant cannot be told.
    """
    merged: dict[str, Given] = {}
    for layer in layers:
        seen: dict[str, Given] = {}
        for name, given in layer:
            key = canonical(name)
            before = seen.get(key)
            if before is not None and before.spelled != given.spelled:
                raise KafkaConfigError(f"{before.label} and {given.label} are the same property: keep one")
            seen[key] = merged[key] = given
    return merged


def _jaas(given: Given) -> tuple[str, str]:
    """Username and password from a Java PlainLoginModule/ScramLoginModule sasl.jaas.config line."""
    module = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b(.*?);?\s*$", given.value, re.S)
    where = given.label
    if not module:
        raise KafkaConfigError(f'{where} is not \'LoginModule required username="..." password="...";\'')
    cls = module.group(1).rsplit(".", 1)[-1]
    if cls == "OAuthBearerLoginModule":
        raise KafkaConfigError(f"{where}: {OAUTH}")
    if cls == "Krb5LoginModule":
        raise KafkaConfigError(f"{where}: {KERBEROS}, then give sasl.mechanism=GSSAPI without sasl.jaas.config")
    if cls not in ("PlainLoginModule", "ScramLoginModule"):
        raise KafkaConfigError(
            f"{where}: {cls} is not supported: only PlainLoginModule and ScramLoginModule "
            f"(username and password) map onto kafka-python"
        )
    options = {
        m.group(1): (m.group(2)[1:-1].replace('\\"', '"') if m.group(2).startswith('"') else m.group(2))
        for m in re.finditer(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)', module.group(3))
    }
    missing = [key for key in ("username", "password") if not options.get(key)]
    if missing:
        raise KafkaConfigError(f"{where}: {cls} without {' and '.join(missing)}")
    return options["username"], options["password"]


def map_properties(props: Mapping[str, Given]) -> Mapped:
    """Supported properties → KafkaConfig fields and kafka-python arguments; anything else → KafkaConfigError."""
    out = Mapped()
    sockets: dict[str, bool] = {}
    for name, given in props.items():
        prop = BY_NAME.get(name)
        if prop is None:
            _refuse(name, given)
            continue
        try:
            value = prop.parse(given.value)
        except v.Bad as bad:
            raise KafkaConfigError(f"{given.label} {_shown(name, given.value)} {bad}") from None
        if name == "sasl.jaas.config":
            out.fields["sasl_username"], out.fields["sasl_password"] = _jaas(given)
            out.origins["sasl_username"] = out.origins["sasl_password"] = given.label
            continue
        if prop.target == "socket_options":
            sockets[name] = value
            out.origins["socket_options"] = given.label
            continue
        out.side(prop.side)[prop.target] = value
        out.origins[prop.target] = given.label
    if sockets:
        import socket

        # kafka-python's default is TCP_NODELAY only; librdkafka's names switch Nagle and keep-alive.
        options = []
        if sockets.get("socket.nagle.disable", True):
            options.append((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
        if sockets.get("socket.keepalive.enable", False):
            options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        out.common["socket_options"] = options
    _check_together(out)
    return out


def _refuse(name: str, given: Given) -> None:
    if name in HARMLESS and given.value.strip().lower() == HARMLESS[name]:
        return
    if name in MANAGED:
        why, accepted = MANAGED[name]
        if accepted is not None and given.value.strip().lower() == accepted:
            return
        raise KafkaConfigError(f"{given.label} is managed by sentictl: {why}")
    reason = unsupported(name)
    if reason:
        raise KafkaConfigError(f"{given.label} cannot be used: {reason}")
    import difflib

    known = [*BY_NAME, *ALIASES]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8) or difflib.get_close_matches(
        name.lower().replace("_", "."), known, n=1, cutoff=0.8
    )
    hint = f"; did you mean {close[0]}?" if close else ""
    raise KafkaConfigError(f"unknown Kafka property {given.label}{hint} (-X list shows the supported ones)")


def _check_together(out: Mapped) -> None:
    """Combinations kafka-python would refuse only after connecting, refused now with the property names."""
    p, c, both = out.producer, out.consumer, out.common
    if p.get("enable_idempotence") is True:
        if p.get("acks", "all") != "all":
            raise KafkaConfigError(
                f"{out.origins['enable_idempotence']} true needs acks=all (now {out.origins['acks']} {p['acks']})"
            )
        if p.get("retries") == 0:
            raise KafkaConfigError(f"{out.origins['enable_idempotence']} true needs retries above 0")
        if both.get("max_in_flight_requests_per_connection", 5) > 5:
            raise KafkaConfigError(
                f"{out.origins['enable_idempotence']} true needs max.in.flight.requests.per.connection 5 or less"
            )
    # kafka-python's consumer: fetch wait < request timeout < idle timeout (its defaults: 500, 30000, 540000).
    chain = [
        ("fetch_max_wait_ms", c.get("fetch_max_wait_ms", 500)),
        ("request_timeout_ms", both.get("request_timeout_ms", 30_000)),
        ("connections_max_idle_ms", both.get("connections_max_idle_ms", 540_000)),
    ]
    for (low, a), (high, b) in zip(chain, chain[1:]):
        if a >= b and (low in out.origins or high in out.origins):
            shown = [out.origins.get(k, f"{NAME_OF[k]} (default)") for k in (low, high)]
            raise KafkaConfigError(f"{shown[0]} {a} must be below {shown[1]} {b}")


def describe_properties() -> str:
    """The supported properties, one per line (what `-X list` prints)."""
    rows = []
    width = max(len(p.name) + (len(", ".join(p.aliases)) + 8 if p.aliases else 0) for p in PROPERTIES) + 2
    for p in PROPERTIES:
        names = p.name + (f" (also {', '.join(p.aliases)})" if p.aliases else "")
        target = f"--{p.target.replace('_', '-')}" if p.side == "connection" else p.target
        if p.name == "ssl.endpoint.identification.algorithm":
            target = "--no-check-hostname (none or empty)"
        elif p.name == "sasl.jaas.config":
            target = "--sasl-username, --sasl-password (PlainLoginModule, ScramLoginModule)"
        elif p.target == "socket_options":
            target = "socket_options"
        rows.append(f"{names:<{width}}{p.side:<11}{target}")
    return "\n".join(rows)
