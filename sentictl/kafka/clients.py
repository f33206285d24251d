"""Producer and consumer factories over one :class:`KafkaConfig`, and connecting with retry.

kafka-python is imported inside the functions: ``sentictl score`` imports the CLI modules that
import this package, and must not pay for kafka-python at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import BrokerUnavailable, KafkaConfigError
from .config import KafkaConfig

T = TypeVar("T")

# Both doors want every replica to have a result before it counts as delivered; a short linger
# lets a batch of results share one request without delaying a lone result noticeably.
PRODUCER_DEFAULTS: dict[str, Any] = {"acks": "all", "linger_ms": 5}
# Doors commit offsets themselves, after the results are delivered.
CONSUMER_DEFAULTS: dict[str, Any] = {"enable_auto_commit": False}


class ConnectStopped(Exception):
    """A stop was requested while still waiting for the broker (nothing consumed yet)."""


def _settings_error(exc: Exception) -> KafkaConfigError:
    return KafkaConfigError(f"invalid Kafka client settings: {exc}")


def producer_kwargs(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """KafkaProducer arguments: connection, sentictl's defaults, the door's ``overrides``, then the user's properties.

    The user's -X/--kafka-config properties come last: a door's choice (e.g. serve's request
    timeout) is a default the user may tune. What a door must control (transactional ids, offsets
    commits, serializers) is refused as a property, so it cannot reach this point.
    """
    return {**config.client_kwargs(), **PRODUCER_DEFAULTS, **overrides, **config.side_settings("producer")}


def consumer_kwargs(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """KafkaConsumer arguments, in the same order as :func:`producer_kwargs`."""
    kwargs = {**config.client_kwargs(), **CONSUMER_DEFAULTS, **overrides, **config.side_settings("consumer")}
    names = kwargs.get("partition_assignment_strategy")
    if names and isinstance(names[0], str):
        kwargs["partition_assignment_strategy"] = _assignors(names)
    if kwargs.get("group_id") is None:
        # Static membership belongs to group members; a group-less reader (the exactly-once check) has none.
        kwargs.pop("group_instance_id", None)
    return kwargs


def _assignors(names: tuple[str, ...]) -> tuple[Any, ...]:
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    classes = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
    }
    return tuple(classes[name] for name in names)


def make_producer(config: KafkaConfig, **overrides: Any) -> Any:
    """A KafkaProducer for this connection: acks=all, linger_ms=5, ``overrides``, then the user's properties."""
    from kafka.errors import KafkaConfigurationError

    from kafka import KafkaProducer

    try:
        return KafkaProducer(**producer_kwargs(config, **overrides))
    except (KafkaConfigurationError, ValueError) as exc:
        raise _settings_error(exc) from None
    except RuntimeError as exc:
        if "compression codec" not in str(exc):  # kafka-python: "Libraries for lz4 compression codec not found"
            raise
        raise _settings_error(exc) from None


def make_consumer(config: KafkaConfig, **overrides: Any) -> Any:
    """A KafkaConsumer for this connection (no auto-commit), ``overrides``, then the user's properties."""
    from kafka.errors import KafkaConfigurationError

    from kafka import KafkaConsumer

    try:
        return KafkaConsumer(**consumer_kwargs(config, **overrides))
    except (KafkaConfigurationError, ValueError) as exc:
        raise _settings_error(exc) from None


def connect_with_retry(
    make: Callable[[float], T],
    config: KafkaConfig,
    *,
    what: str,
    timeout: float,
    deadline: float | None = None,
    log: Callable[[str], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
    hint: str = "",
) -> T:
    """Call ``make(attempt_timeout_s)`` until it connects, backing off, until ``deadline``.

    ``deadline`` (time.monotonic()) lets several clients share one budget of ``timeout`` seconds.
    Settings errors are raised at once; an unreachable broker raises BrokerUnavailable after the
    deadline, and ConnectStopped when ``stopped()`` turns true (e.g. after SIGTERM).
    """
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout if deadline is None else deadline
    delay, attempt = 0.25, 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            # Bounded attempts: a long first attempt would hide a stop request or the deadline.
            return make(max(0.5, min(remaining, 5.0)))
        except KafkaConfigError:
            raise
        except (KafkaError, OSError) as exc:
            remaining = deadline - time.monotonic()
            if stopped():
                raise ConnectStopped() from None
            if remaining <= 0:
                raise BrokerUnavailable(
                    f"cannot reach the Kafka broker at {config.bootstrap} ({what}) after {timeout:g} s and "
                    f"{attempt} attempts: {exc}. Check --bootstrap, that the broker is up, and the "
                    f"TLS/SASL options{hint}"
                ) from None
            if attempt == 1 and log is not None:
                log(f"waiting for the broker at {config.bootstrap} (up to {timeout:g} s)")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 4.0)
