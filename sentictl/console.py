"""Everything sentictl tells a person goes through here, on stderr (stdout carries data).

notice: one line; Steps: numbered steps of a long job with their durations (export, bench);
progress_bar: a byte bar for file inputs, only when a person watches stderr (score).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any


def notice(message: str) -> None:
    """One line on stderr, prefixed with the program name; never raises (stderr may be gone)."""
    line(f"sentictl: {message}")


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
