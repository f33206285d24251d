"""Everything sentictl tells a person goes through here, on stderr (stdout carries data).

notice: one line; Steps: numbered steps of a long job with their durations (export, bench);
progress_bar: a byte bar for file inputs, only when a person watches stderr (score).

A library prints nothing: while the public Python API (``sentictl.load``, ``Classifier``) runs,
:func:`library_notices` sends notices to the ``sentictl`` logger instead of stderr, so the program
that imports sentictl decides whether and where they appear. The switch is a context variable, so
a command running in another thread (or task) of the same process keeps its stderr lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

LOGGER = logging.getLogger("sentictl")
LOGGER.addHandler(logging.NullHandler())  # no "last resort" stderr output for library users
_TO_LOGGING: ContextVar[bool] = ContextVar("sentictl_notices_to_logging", default=False)


def notice(message: str) -> None:
    """One line on stderr, prefixed with the program name; never raises (stderr may be gone).

    Inside :func:`library_notices`, a WARNING on the ``sentictl`` logger instead.
    """
    if _TO_LOGGING.get():
        LOGGER.warning(message)
        return
    line(f"sentictl: {message}")


@contextmanager
def library_notices() -> Iterator[None]:
    """Within this block (this thread or task only), notices go to the ``sentictl`` logger, not stderr."""
    token = _TO_LOGGING.set(True)
    try:
        yield
    finally:
        _TO_LOGGING.reset(token)


def line(text: str) -> None:
    """A line on stderr as it is (progress lines with their own prefix)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class Steps:
    """Numbered step lines ("sentictl export [2/5] building int8 ...") and how long each took."""

    def __init__(self, command: str, total: int, quiet: bool = False):
        self.command, self.total, self.quiet = command, total, quiet
        self.n = 0
        self.started = 0.0

    def start(self, what: str) -> None:
        self.n += 1
        self.started = time.perf_counter()
        if not self.quiet:
            line(f"sentictl {self.command} [{self.n}/{self.total}] {what} ...")

    def done(self, detail: str = "") -> None:
        if not self.quiet:
            took = time.perf_counter() - self.started
            line(f"    done in {took:.1f} s{'; ' + detail if detail else ''}")


def progress_bar(name: str, stream: IO[bytes], enabled: bool | None) -> Any:
    """A byte-based tqdm bar for a file input, or None (stdin, --no-progress, stderr not a terminal)."""
    if name == "-" or enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    try:
        total = os.fstat(stream.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, leave=False)
