"""Loading the model folder again (SIGHUP) in the background, for the bridge to switch to between two batches."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Reloader:
    """One background load at a time: request() from a signal handler, start() and take() from the loop."""

    def __init__(self, load: Callable[[], Any]):
        """``load``: loads (and verifies) the model folder again; what it raises is handed over as the result."""
        self._load = load
        self._wanted = False
        self._thread: threading.Thread | None = None
        self._result: Any = None

    def request(self) -> None:
        """Ask for a reload (safe from a signal handler: it only sets a flag)."""
        self._wanted = True

    def start(self) -> bool:
        """Start a requested load unless one is running; True when it started."""
        if not self._wanted or self._thread is not None:
            return False
        self._wanted = False
        self._thread = threading.Thread(target=self._run, name="sentictl-reload", daemon=True)
        self._thread.start()
        return True

    def ready(self) -> bool:
        """True when a load has ended and its result waits for take()."""
        return self._thread is not None and not self._thread.is_alive()

    def take(self) -> Any:
        """The loaded model, or the exception the load raised (once: the next load may start)."""
        self._thread = None
        result, self._result = self._result, None
        return result

    def _run(self) -> None:
        try:
            self._result = self._load()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            self._result = exc
