"""Riding out a broker that drops connections or restarts mid-run: which errors to retry, and how long.

Every Kafka call of the loop (poll, send/flush, commit) goes through an :class:`Outage`: the
first failure starts a clock of --connect-timeout seconds, later ones back off (0.25 s doubling
to 4 s), success ends the episode, and the clock running out (or a stop request) ends the run
with a :class:`BrokerLost` that says what was and was not committed. What a caller does between
tries — re-send, rejoin, poll again — is its own business; the Outage only keeps time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import BridgeError, BrokerLost

FIRST_DELAY = 0.25
MAX_DELAY = 4.0


def kafka_error(exc: BaseException) -> bool:
    """True for what a broker or the network can cause (worth a retry or a one-line message)."""
    from kafka.errors import KafkaError

    # kafka-python lets a few socket errors through unwrapped on a reset connection.
    return isinstance(exc, (KafkaError, ConnectionError, TimeoutError))


@dataclass
class Caught:
    """What a :func:`kafka_errors` block raised, when a broker or the network caused it; None: it ran through."""

    error: BaseException | None = None


@contextmanager
def kafka_errors() -> Iterator[Caught]:
    """Run a block of Kafka calls, keeping what a broker or the network raises in ``.error``; anything else
    (a bug, KeyboardInterrupt) propagates. The caller decides: retry, give up, or report in one line."""
    caught = Caught()
    try:
        yield caught
    except Exception as exc:
        if not kafka_error(exc):
            raise
        caught.error = exc


def permanent(exc: BaseException) -> bool:
    """True for Kafka errors that no amount of waiting fixes (permissions, versions, a record too big)."""
    from kafka import errors as e

    if type(exc).__name__.endswith("AuthorizationFailedError"):
        return True
    # A codec whose library is missing (zstd without zstandard): every poll of those records fails alike.
    return isinstance(
        exc,
        (
            e.UnsupportedVersionError,
            e.KafkaConfigurationError,
            e.IllegalStateError,
            e.InvalidTopicError,
            e.MessageSizeTooLargeError,
            e.FencedInstanceIdError,
            e.ProducerFencedError,
            e.SaslAuthenticationFailedError,
            e.UnsupportedCodecError,
        ),
    )


def describe(exc: BaseException) -> str:
    """The error in a few words: its type and message, on one line."""
    from kafka import errors as e

    text = " ".join(str(exc).split())
    if isinstance(exc, e.UnsupportedCodecError):
        text += " (install them with: pip install 'sentictl[kafka-compression]')"
    name = type(exc).__name__
    if not text or text == name or text.startswith(f"{name}:"):  # kafka-python's str() names the type itself
        return text or name
    return f"{name}: {text}"


class Outage:
    """One episode of failing calls to the broker: backoff between tries, a deadline, one log line each way."""

    def __init__(
        self,
        what: str,
        timeout: float,
        log: Callable[[str], None],
        *,
        stopped: Callable[[], bool] = lambda: False,
        consequence: str = "",
        on_retry: Callable[[], None] | None = None,
    ):
        self.what = what
        self.timeout = timeout
        self.log = log
        self.stopped = stopped
        self.consequence = consequence
        self.on_retry = on_retry
        self.started: float | None = None
        self.tries = 0
        self.delay = FIRST_DELAY

    @property
    def active(self) -> bool:
        """True between a failure and the next success."""
        return self.started is not None

    def remaining(self) -> float:
        """Seconds left before giving up (the whole timeout when nothing has failed yet)."""
        if self.started is None:
            return self.timeout
        return self.started + self.timeout - time.monotonic()

    def failed(self, exc: BaseException, since: float | None = None) -> None:
        """Note a failure, then sleep the backoff; raise BrokerLost when time is up or a stop was asked for.

        ``since``: when the failed attempt began (a flush that blocked counts against the deadline).
        """
        if permanent(exc):
            raise BridgeError(f"{self.what} failed: {describe(exc)}{self._then()}") from None
        now = time.monotonic()
        if self.started is None:
            self.started = min(since, now) if since is not None else now
            self.log(f"{self.what} failed ({describe(exc)}): retrying for up to {self.timeout:g} s")
        self.tries += 1
        if self.on_retry is not None:
            self.on_retry()
        left = self.started + self.timeout - now
        if self.stopped():
            raise BrokerLost(f"stopped while {self.what} kept failing ({describe(exc)}){self._then()}") from None
        if left <= 0:
            raise BrokerLost(
                f"{self.what} failed for {now - self.started:.1f} s ({self.tries} tries, last: {describe(exc)})"
                f"{self._then()}; --connect-timeout waits longer"
            ) from None
        time.sleep(min(self.delay, left))
        self.delay = min(self.delay * 2, MAX_DELAY)

    def recovered(self) -> None:
        """The call worked: end the episode (and say so, if there was one)."""
        if self.started is not None:
            self.log(
                f"{self.what}: the broker answers again after {time.monotonic() - self.started:.1f} s "
                f"({self.tries} failed {'try' if self.tries == 1 else 'tries'})"
            )
        self.started, self.tries, self.delay = None, 0, FIRST_DELAY

    def _then(self) -> str:
        return f"; {self.consequence}" if self.consequence else ""


def quiet_kafka_finalizers() -> None:
    """Drop the traceback kafka-python's finalizers print for a close that already failed here.

    KafkaProducer.close() raises on records it could not flush before marking itself closed, so its
    __del__ closes again, fails again and prints "Exception ignored ... Traceback" at exit, after
    the bridge has reported the same failure in one line. Other unraisable errors still show.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_sentictl", False):
        return

    def hook(unraisable: Any) -> None:
        owner = getattr(unraisable.object, "__qualname__", "")
        if kafka_error(unraisable.exc_value) and owner.startswith("Kafka") and owner.endswith("__del__"):
            return
        previous(unraisable)

    hook._sentictl = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
