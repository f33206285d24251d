"""Kafka properties sentictl refuses, and why: the ones it manages itself, and those with no kafka-python equivalent.

Every refusal is one line naming the property, where it came from and the reason, so a user
moving a librdkafka or Java client configuration over learns what to drop or change.
"""

from __future__ import annotations

COMMITS = (
    "sentictl commits offsets itself, only after every result of a batch is acknowledged, "
    "so a crash re-delivers rather than loses records"
)
_BYTES = "sentictl reads and writes the record bytes itself"
# Properties sentictl sets itself. A value listed second is what sentictl does anyway, so it is accepted.
MANAGED: dict[str, tuple[str, str | None]] = {
    "enable.auto.commit": (COMMITS, "false"),
    "auto.commit.enable": (COMMITS, "false"),
    "enable.auto.offset.store": (COMMITS, None),
    "auto.commit.interval.ms": (COMMITS, None),
    "key.serializer": (_BYTES, None),
    "value.serializer": (_BYTES, None),
    "key.deserializer": (_BYTES, None),
    "value.deserializer": (_BYTES, None),
    "transactional.id": ("give `sentictl bridge --exactly-once --transactional-id ID` instead", None),
}
OAUTH = (
    "OAUTHBEARER is not supported: kafka-python needs a token-provider object that no option or "
    "property can supply; use SCRAM-SHA-512 or PLAIN over SASL_SSL, or mutual TLS"
)
_KEYSTORE = (
    "kafka-python reads PEM files, not Java key stores: convert them (keytool -exportcert, openssl pkcs12) "
    "and use ssl.ca.location, ssl.certificate.location and ssl.key.location"
)
_INLINE_PEM = "inline PEM is librdkafka-only: save it to a file and use the matching ssl.*.location property"
KERBEROS = "kafka-python uses your Kerberos ticket cache: run kinit (with your keytab) before sentictl"
_JAVA_CLASS = "it names a Java class, which a Python client cannot load"
_LIBRDKAFKA = "librdkafka-only, no kafka-python equivalent"
_NO_EQUIVALENT = "no kafka-python equivalent"
# Known properties that cannot be mapped, and why; names ending in '.' cover every name they begin.
UNSUPPORTED: dict[str, str] = {
    "sasl.oauthbearer.": OAUTH,
    "sasl.login.": OAUTH + " (sasl.login.* configures Java login modules)",
    "ssl.keystore.": _KEYSTORE,
    "ssl.truststore.": _KEYSTORE,
    "ssl.ca.pem": _INLINE_PEM,
    "ssl.certificate.pem": _INLINE_PEM,
    "ssl.key.pem": _INLINE_PEM,
    "ssl_key": _INLINE_PEM,
    "ssl.ca.certificate.stores": _LIBRDKAFKA,
    "enable.ssl.certificate.verification": (
        "kafka-python always verifies the broker's certificate; "
        "ssl.endpoint.identification.algorithm=none skips only the host-name "
        "check (test clusters)"
    ),
    "ssl.protocol": "kafka-python negotiates TLS with Python's defaults (TLS 1.2 or newer)",
    "ssl.enabled.protocols": "kafka-python negotiates TLS with Python's defaults (TLS 1.2 or newer)",
    "ssl.engine.": _LIBRDKAFKA,
    "ssl.providers": _LIBRDKAFKA,
    "ssl.sigalgs.list": _LIBRDKAFKA,
    "ssl.curves.list": _LIBRDKAFKA,
    "ssl.provider": _NO_EQUIVALENT,
    "ssl.keymanager.algorithm": _KEYSTORE,
    "ssl.trustmanager.algorithm": _KEYSTORE,
    "ssl.secure.random.implementation": _NO_EQUIVALENT,
    "sasl.kerberos.principal": KERBEROS,
    "sasl.kerberos.keytab": KERBEROS,
    "sasl.kerberos.kinit.cmd": KERBEROS,
    "sasl.kerberos.min.time.before.relogin": KERBEROS,
    "sasl.kerberos.ticket.": KERBEROS,
    "sasl.client.callback.handler.class": _JAVA_CLASS,
    "partitioner.class": _JAVA_CLASS,
    "interceptor.classes": _JAVA_CLASS,
    "metric.reporters": _JAVA_CLASS,
    "security.providers": _JAVA_CLASS,
    "partitioner": (
        "kafka-python partitions keyed records with murmur2, like the Java client "
        "(librdkafka's murmur2_random); it cannot be changed by a property"
    ),
    "partitioner.": _NO_EQUIVALENT,
    "buffer.memory": "kafka-python does not bound its send buffer in bytes; batch.size and linger.ms shape batching",
    "queue.buffering.max.messages": _LIBRDKAFKA,
    "queue.buffering.max.kbytes": _LIBRDKAFKA,
    "queue.buffering.backpressure.threshold": _LIBRDKAFKA,
    "queued.min.messages": _LIBRDKAFKA,
    "queued.max.messages.kbytes": _LIBRDKAFKA,
    "batch.num.messages": _LIBRDKAFKA + " (batch.size limits bytes)",
    "compression.level": "kafka-python uses each codec's own compression level",
    "debug": _LIBRDKAFKA + " (sentictl -v shows kafka-python's warnings)",
    "log_level": _LIBRDKAFKA + " (sentictl -v shows kafka-python's warnings)",
    "log.": _LIBRDKAFKA,
    "statistics.interval.ms": _LIBRDKAFKA + " (sentictl bridge --metrics-port serves Prometheus metrics)",
    "enable.partition.eof": _LIBRDKAFKA,
    "socket.timeout.ms": _LIBRDKAFKA + " (use request.timeout.ms)",
    "socket.max.fails": _LIBRDKAFKA,
    "socket.connection.setup.timeout.ms": _NO_EQUIVALENT,
    "socket.connection.setup.timeout.max.ms": _NO_EQUIVALENT,
    "api.version.request": "kafka-python always asks the broker for its API versions",
    "api.version.request.timeout.ms": _LIBRDKAFKA,
    "api.version.fallback.ms": _LIBRDKAFKA,
    "broker.version.fallback": "kafka-python always asks the broker for its API versions",
    "broker.address.family": _LIBRDKAFKA,
    "broker.address.ttl": _LIBRDKAFKA,
    "topic.metadata.refresh.sparse": _LIBRDKAFKA,
    "topic.metadata.refresh.fast.interval.ms": _LIBRDKAFKA,
    "topic.metadata.propagation.max.ms": _LIBRDKAFKA,
    "enable.sparse.connections": _LIBRDKAFKA,
    "sticky.partitioning.linger.ms": _LIBRDKAFKA,
    "fetch.error.backoff.ms": _LIBRDKAFKA,
    "fetch.queue.backoff.ms": _LIBRDKAFKA,
    "coordinator.query.interval.ms": _LIBRDKAFKA,
    "enable.gapless.guarantee": _LIBRDKAFKA,
    "message.copy.max.bytes": _LIBRDKAFKA,
    "builtin.features": _LIBRDKAFKA,
    "plugin.library.paths": _LIBRDKAFKA,
    "enable.random.seed": _LIBRDKAFKA,
    "internal.termination.signal": _LIBRDKAFKA,
    "offset.store.method": COMMITS,
    "retry.backoff.max.ms": "kafka-python backs off a retry by retry.backoff.ms only",
    "default.api.timeout.ms": _NO_EQUIVALENT,
    "metrics.recording.level": _NO_EQUIVALENT,
    "auto.include.jmx.reporter": _NO_EQUIVALENT,
    "enable.metrics.push": _NO_EQUIVALENT,
    "client.software.name": _NO_EQUIVALENT,
    "client.software.version": _NO_EQUIVALENT,
    "group.protocol": "kafka-python speaks the classic consumer-group protocol only",
    "group.remote.assignor": "kafka-python speaks the classic consumer-group protocol only",
    "internal.leave.group.on.close": _NO_EQUIVALENT,
}
# Properties whose one harmless value is accepted although nothing can be configured.
HARMLESS = {"enable.ssl.certificate.verification": "true", "group.protocol": "classic"}


def unsupported(name: str) -> str | None:
    """Why a known property cannot be used, or None when it is not one of them."""
    if name in UNSUPPORTED:
        return UNSUPPORTED[name]
    for prefix, why in UNSUPPORTED.items():
        if prefix.endswith(".") and name.startswith(prefix):
            return why
    return None
