"""Running the HTTP door under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
from typing import Any, Callable

from ..engine import ResultCache
from ..errors import SentictlError
from .app import create_app
from .settings import ServeSettings

log = logging.getLogger("sentictl.serve")


def serve(settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; in-flight requests are answered before it returns."""
    import uvicorn

    _configure_logging()
    fatal: list[str] = []
    server_box: list[Any] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        log.error("%s", message)
        if server_box:
            server_box[0].should_exit = True

    app = create_app(settings, load, cache, on_fatal)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on", access_log=settings.access_log,
        log_level="info", timeout_graceful_shutdown=settings.graceful_timeout, backlog=2048,
        server_header=False, log_config=None,
    )
    server = uvicorn.Server(config)
    server_box.append(server)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        log.warning("listening on %s without --token: anyone who can reach this port can use it", settings.host)
    # uvicorn drains connections on SIGTERM, then re-raises the signal with the handler that was
    # in place before it started; a no-op handler here makes that a clean exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    except SystemExit:
        # uvicorn exits this way when it cannot bind; it has already logged why.
        if not fatal:
            fatal.append(f"could not listen on {settings.host}:{settings.port} (is the port in use? try --port)")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if fatal:
        raise SentictlError(fatal[0])
    if not server.started:
        raise SentictlError(f"could not listen on {settings.host}:{settings.port} (is the port in use? try --port)")


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
