"""Running the HTTP door under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable
from typing import Any

from ..engine import ResultCache
from ..engine.memory import fix_mmap_threshold
from ..engine.rediscache import RedisCache
from ..errors import SentictlError
from .connections import MAX_HEADER_BYTES, ConnectionGuard, connection_cap, listen, raise_fd_limit
from .routes import create_app
from .settings import DEFAULT_CONCURRENT_REQUESTS, ServeSettings

log = logging.getLogger("sentictl.serve")

# The kernel's queue of connections not yet accepted; they hold no descriptor of ours until
# accepted, so a long queue costs nothing and spares a burst of clients the SYN retry delay.
LISTEN_BACKLOG = 2048


def serve(settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | RedisCache | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; in-flight requests are answered before it returns."""
    import uvicorn

    _configure_logging()
    # Before the model loads: a reload (SIGHUP) then gives the old model's memory back (see there).
    fix_mmap_threshold()
    fatal: list[str] = []
    server_box: list[Any] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        log.error("%s", message)
        if server_box:
            server_box[0].should_exit = True

    fd_limit = raise_fd_limit()
    settings = resolve_limits(settings, fd_limit)
    app = create_app(settings, load, cache, on_fatal)
    assert settings.max_connections is not None  # resolved above
    guard = ConnectionGuard(
        settings.max_connections, settings.header_timeout, settings.body_timeout, app.service.metrics
    )
    sockets = listen(settings.host, settings.port, LISTEN_BACKLOG, guard)
    server = uvicorn.Server(_uvicorn_config(settings, app, guard))
    server_box.append(server)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        log.warning("listening on %s without --token: anyone who can reach this port can use it", settings.host)
    log.info(
        "at most %d connections (descriptor limit %s), %d requests in progress; header timeout %g s, body timeout %g s",
        settings.max_connections,
        fd_limit if fd_limit is not None else "none",
        settings.max_concurrent_requests,
        settings.header_timeout,
        settings.body_timeout,
    )
    # uvicorn drains connections on SIGTERM, then re-raises the signal with the handler that was
    # in place before it started; a no-op handler here makes that a clean exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # SIGHUP reloads the model (Service.reload, set up once the event loop runs); until then it must
    # not stop the server, as its default action would.
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN) if hasattr(signal, "SIGHUP") else None
    try:
        server.run(sockets=sockets)
    except SystemExit:
        # uvicorn exits this way when start-up fails; it has already logged why.
        if not fatal:
            fatal.append(f"could not start serving on {settings.host}:{settings.port}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if hup is not None:
            signal.signal(signal.SIGHUP, hup)
        for sock in sockets:
            sock.close()
    if fatal:
        raise SentictlError(fatal[0])
    if not server.started:
        raise SentictlError(f"could not start serving on {settings.host}:{settings.port}")


def _uvicorn_config(settings: ServeSettings, app: Any, guard: ConnectionGuard) -> Any:
    """uvicorn's configuration: the guarded protocol, the asyncio loop, our timeouts and logging."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=settings.access_log,
        log_level="info",
        # uvicorn annotates both timeouts int but uses them as asyncio delays, which take fractions too.
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
        backlog=LISTEN_BACKLOG,
        server_header=False,
        log_config=None,
        # The guarded h11 protocol (connections.py) instead of "auto", which would pick httptools
        # where installed and lose the timeouts; no WebSocket routes, so no upgrades to other protocols.
        http=guard.protocol(),
        ws="none",
        # asyncio's accept loop calls the listening socket's accept(), where GatedSocket keeps the
        # cap; uvloop (which "auto" would pick where installed) accepts in C and would bypass it.
        loop="asyncio",
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        # limit_concurrency would count slow clients' connections too and 503 everyone once they add up.
        limit_concurrency=None,
    )


def resolve_limits(settings: ServeSettings, fd_limit: int | None) -> ServeSettings:
    """Settings with the connection cap and the concurrent-request limit worked out from the descriptor limit."""
    connections = connection_cap(fd_limit, settings.max_connections)
    requests = settings.max_concurrent_requests
    if requests is None:
        # Half the connections at most, so that at the cap there are always idle ones to close for a newcomer.
        requests = max(1, min(DEFAULT_CONCURRENT_REQUESTS, connections // 2))
    return dataclasses.replace(settings, max_connections=connections, max_concurrent_requests=requests)


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("sentictl: %(message)s"))
    for name in ("sentictl", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # kafka-python logs every reconnect at WARNING/ERROR; our own lines say what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
