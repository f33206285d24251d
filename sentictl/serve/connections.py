"""Bounds on what a client can hold: header and body read timeouts, a connection cap, descriptor headroom.

Why uvicorn plus this guard rather than another server: uvicorn has ``limit_concurrency`` (503
once connections + tasks reach N, and a slow client's half-sent request is one of those
connections, so enough of them lock everyone out), ``timeout_keep_alive`` (only between requests;
every received byte cancels it) and ``h11_max_incomplete_event_size`` (a size, not a time), but
nothing bounds how long a request's headers or body may take to arrive (see
``uvicorn/protocols/http/h11_impl.py``), and asyncio's accept loop takes descriptors until
``accept()`` fails with EMFILE, logging a traceback each time and pausing accepts for a second.
hypercorn and granian have read timeouts, but either would be a new dependency with another
process model and shutdown path for what is two timers and a counter; neither sheds slow
connections to make room for a new client. So uvicorn's h11 protocol stays and is extended here:

- ``GuardedH11Protocol``: a header timer from the connection's start (or, on a kept-alive
  connection, from the next request's first byte) until its headers are complete; a body timer
  from there until the body is complete. Either answers 408 and closes. A client that stops
  reading its answer is closed after the body timeout too. The protocol also keeps the
  guard's list of *waiting* connections, those with no request in progress: still sending
  headers, idle between requests, or already answered while their body still trickles in.
- ``GatedSocket``: the listening socket. Its ``accept()`` is where asyncio takes a descriptor,
  so the cap is kept there, before the descriptor exists: below the cap a connection is
  accepted; at the cap the oldest waiting connection is closed first (its descriptor comes back
  on the next loop iteration, and the new client, next in the kernel's queue, is served); when
  every connection has a request in progress the newcomer is answered 503 and closed at once.
- ``raise_fd_limit`` / ``connection_cap``: the soft RLIMIT_NOFILE raised to the hard limit, and
  the cap derived from it, leaving a reserve for the process's own files (model, SQLite, Kafka).

uvicorn's ``limit_concurrency`` stays off: the cap here counts connections without shutting out
new clients, and ``--max-concurrent-requests`` (in the routes) bounds the work in progress.
"""

from __future__ import annotations

import asyncio
import errno
import http
import logging
import os
import socket
import time
from collections import OrderedDict
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConnectionsFull, HttpError, RequestTimeout, SentictlError
from .metrics import Metrics

log = logging.getLogger("sentictl.serve")

# Descriptors kept free beyond those open at start: SQLite holds three per connection in WAL mode,
# model files while loading, Kafka sockets, the event loop's own.
FD_RESERVE = 64
# Past this, more connections cost memory without serving anyone faster; --max-connections raises it.
DEFAULT_MAX_CONNECTIONS = 10_000
# The most request-line-plus-headers bytes buffered for one request (h11's default, stated).
MAX_HEADER_BYTES = 16 * 1024
# Refusals answered in one accept() call before the event loop gets its turn back.
_REFUSALS_PER_CALL = 64
_WARN_EVERY_S = 60.0

ACCEPT, WAIT, REFUSE = "accept", "wait", "refuse"


# ---------------------------------------------------------------------------------- descriptors
def raise_fd_limit() -> int | None:
    """Raise the soft descriptor limit to the hard one; returns the soft limit now (None where there is none)."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is no value for setrlimit: Linux stops at nr_open, macOS at OPEN_MAX.
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 10240]
    for target in targets:
        if soft != resource.RLIM_INFINITY and target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    return None if soft == resource.RLIM_INFINITY else int(soft)


def open_fds() -> int | None:
    """How many descriptors this process has open, where the system can say."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return None


def connection_cap(limit: int | None, wanted: int | None) -> int:
    """The most client connections to hold: ``wanted`` (--max-connections), never more than ``limit`` leaves free."""
    if limit is None:
        allowed = DEFAULT_MAX_CONNECTIONS
    else:
        allowed = limit - (open_fds() or 32) - FD_RESERVE
        if allowed < 16:
            allowed = max(1, limit // 2)
            log.warning(
                "the descriptor limit is %d: only %d connections at once (raise it with `ulimit -n`)", limit, allowed
            )
    if wanted is None:
        return min(allowed, DEFAULT_MAX_CONNECTIONS)
    if wanted > allowed:
        log.warning(
            "--max-connections %d is more than the descriptor limit (%s) leaves room for; using %d",
            wanted,
            limit,
            allowed,
        )
        return allowed
    return wanted


def raw_response(error: HttpError) -> bytes:
    """A complete HTTP/1.1 error answer in the JSON error shape, for the moments no route is running."""
    body = orjson.dumps(error.body())
    status = error.status
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# ---------------------------------------------------------------------------------- the guard
class ConnectionGuard:
    """The connection cap and read timeouts shared by every connection of one server."""

    def __init__(self, max_connections: int, header_timeout: float, body_timeout: float, metrics: Metrics):
        self.max_connections = max(1, max_connections)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.metrics = metrics
        self.open = 0  # accepted descriptors not yet released
        # Connections without a request in progress, oldest first: the ones to close when full.
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        # Closed here, descriptor not yet released (that happens on the next loop iteration).
        self.closing: set[GuardedH11Protocol] = set()
        self._refusal = raw_response(
            ConnectionsFull(
                f"all {self.max_connections} connections have a request in progress (--max-connections); retry shortly"
            )
        )
        self._warned_at = -_WARN_EVERY_S

    def protocol(self) -> type[GuardedH11Protocol]:
        """The uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) bound to this guard."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    # Called from GatedSocket.accept, on the event loop.
    def admit(self) -> str:
        """ACCEPT a new connection, WAIT for a descriptor being released, or REFUSE (all busy)."""
        if self.open < self.max_connections:
            return ACCEPT
        if self.closing:
            return WAIT
        if self.waiting:
            self._warn(
                "connection cap %d reached: closing the oldest connections without a request in progress",
                self.max_connections,
            )
            next(iter(self.waiting)).close_for("shed")
            return WAIT
        return REFUSE

    def accepted(self) -> None:
        self.open += 1
        self.metrics.open_connections.set(self.open)

    def refuse(self, conn: socket.socket) -> None:
        """Answer a connection 503 and close it without ever handing it to the event loop."""
        self._warn("connection cap %d reached with every connection busy: answering new ones 503", self.max_connections)
        try:
            conn.setblocking(False)
            # Read what already arrived so that closing sends FIN, not a reset that could eat the answer.
            try:
                conn.recv(65536)
            except BlockingIOError:
                pass
            conn.send(self._refusal)
        except OSError:
            pass
        finally:
            conn.close()
        self.metrics.connections_closed.labels("refused").inc()

    # Called by the protocols.
    def released(self, protocol: GuardedH11Protocol) -> None:
        self.open -= 1
        self.waiting.pop(protocol, None)
        self.closing.discard(protocol)
        self.metrics.open_connections.set(self.open)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(message + " (said once a minute; see sentictl_connections_closed_total in /metrics)", *args)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read timeouts and the guard's bookkeeping."""

    guard: ConnectionGuard  # set on the class ConnectionGuard.protocol() makes

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for = ""
        self._idle = False

    # ------------------------------------------------------------------ uvicorn's hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track(first=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.guard.released(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # On a kept-alive connection the header clock starts with the next request's first byte
        # (until then uvicorn's keep-alive timeout applies).
        if self._idle and self._timer is None:
            self._arm("header", self.guard.header_timeout)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def pause_writing(self) -> None:
        # A client that stops reading its answer would hold the request (and its descriptor) forever.
        super().pause_writing()
        self._arm("send", self.guard.body_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._timer_for == "send":
            self._cancel_timer()

    # ------------------------------------------------------------------ phases
    def _track(self, first: bool = False) -> None:
        """Follow the request's phase: which timer runs, and whether this connection may be closed to make room."""
        closing = self.transport is None or self.transport.is_closing()
        state = self.conn.their_state
        idle = state is h11.IDLE
        if idle != self._idle:
            self._idle = idle
            if idle and (first or self.conn.trailing_data[0]):
                self._arm("header", self.guard.header_timeout)
            elif self._timer_for == "header":
                self._cancel_timer()
        if state is h11.SEND_BODY:
            if self._timer_for != "body":
                self._arm("body", self.guard.body_timeout)
        elif self._timer_for == "body":
            self._cancel_timer()
        busy = not idle and self.cycle is not None and not self.cycle.response_complete
        if closing or busy:
            self.guard.waiting.pop(self, None)
        elif self not in self.guard.waiting:
            self.guard.waiting[self] = None

    def _arm(self, phase: str, seconds: float) -> None:
        self._cancel_timer()
        self._timer_for = phase
        self._timer = self.loop.call_later(seconds, self._expired, phase)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_for = ""

    def _expired(self, phase: str) -> None:
        self._timer = None
        self._timer_for = ""
        reply = None
        if self.transport.is_closing():
            pass  # e.g. an answer the client never reads: the descriptor goes anyway
        elif phase == "header" and self.conn.trailing_data[0]:
            reply = RequestTimeout(
                f"the request's headers did not arrive within {self.guard.header_timeout:g} s (--header-timeout)"
            )
        elif phase == "body" and self.cycle is not None and not self.cycle.response_started:
            reply = RequestTimeout(
                f"the request's body did not arrive within {self.guard.body_timeout:g} s "
                f"of its headers (--body-timeout)"
            )
        self.close_for(f"{phase}_timeout", reply)

    def close_for(self, reason: str, reply: HttpError | None = None) -> None:
        """Close this connection now (answering ``reply`` first, if any) and count why."""
        self._cancel_timer()
        self.guard.waiting.pop(self, None)
        self.guard.closing.add(self)
        if reply is not None:
            self.transport.write(raw_response(reply))
        # abort() drops what the client would not take, so the descriptor is released on the next
        # iteration whatever the client does; a short answer has already gone to the kernel.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()
        self.guard.metrics.connections_closed.labels(reason).inc()


class GatedSocket(socket.socket):
    """A listening socket whose ``accept()`` keeps the process within the guard's connection cap."""

    guard: ConnectionGuard

    def accept(self) -> tuple[socket.socket, Any]:
        refused = 0
        while True:
            verdict = self.guard.admit()
            if verdict == WAIT or refused >= _REFUSALS_PER_CALL:
                # asyncio's accept loop reads this as "nothing more to accept now" and asks again
                # on the next iteration, by which time a closed connection's descriptor is back.
                raise BlockingIOError(errno.EAGAIN, "connection cap reached")
            conn, address = super().accept()  # BlockingIOError when nobody is waiting
            if verdict == ACCEPT:
                self.guard.accepted()
                return conn, address
            self.guard.refuse(conn)
            refused += 1


def listen(host: str, port: int, backlog: int, guard: ConnectionGuard) -> list[socket.socket]:
    """Bound, listening GatedSockets for host:port (every address the name resolves to), for uvicorn's ``sockets``."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SentictlError(f"could not listen on {host}:{port}: {exc.strerror} (check --host)") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys((i[0], i[1], i[2], "", i[4]) for i in infos):
            sock = GatedSocket(family, kind, proto)
            sockets.append(sock)
            sock.guard = guard
            if os.name != "nt":  # on Windows SO_REUSEADDR would let a second server take the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for opened in sockets:
            opened.close()
        raise SentictlError(
            f"could not listen on {host}:{port}: {exc.strerror or exc} (is the port in use? try --port)"
        ) from None
    return sockets
