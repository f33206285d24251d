"""Running one bridge until a stop condition or a signal: the entry point `sentictl bridge` calls."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..errors import BridgeError
from ..kafka import ConnectStopped
from .loop import Bridge
from .metrics import BridgeStats
from .retry import describe, kafka_errors
from .settings import BridgeSettings


def run_bridge(
    model: Any, cache: Any, settings: BridgeSettings, progress: bool = True, reload: Callable[[], Any] | None = None
) -> BridgeStats:
    """Connect, process until a stop condition or SIGTERM/SIGINT, commit, close; return the counters.

    ``reload`` loads the model folder again: on SIGHUP the bridge switches to it between two batches.
    """
    bridge = Bridge(model, cache, settings, progress=progress, reload=reload)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        bridge.log(f"{signal.Signals(signum).name}: finishing the batch in hand, then committing and closing")
        bridge.stop()
        # A second signal falls back to the default behaviour (Ctrl-C twice really stops).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if reload is not None and hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: bridge.request_reload())
    lost = False
    try:
        try:
            bridge.connect()
        except ConnectStopped:
            bridge.log("stopped before connecting: nothing consumed")
            return bridge.stats
        try:
            with kafka_errors() as unexpected:
                stats = bridge.run()
        except BridgeError:
            lost = True
            raise
        if unexpected.error is not None:
            # A Kafka error no retry above expected: still one line, and still nothing uncommitted lost.
            lost = True
            raise BridgeError(
                f"Kafka error: {describe(unexpected.error)}; the batch in hand was not committed, so a restart "
                f"re-processes it"
            ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # After an outage the broker is likely still away: do not hold the exit for long.
        bridge.close(timeout=2.0 if lost else 10.0)
    busy = stats.busy_rate()
    busy_text = f", {busy:,.1f} texts/s from first record to last commit" if busy else ""
    bridge.log(f"done: {stats.line()} in {time.monotonic() - stats.started:.1f} s{busy_text}")
    return stats
