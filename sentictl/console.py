"""Notices on stderr: one place that decides how sentictl talks to a person (stdout carries data)."""

from __future__ import annotations

import sys


def notice(message: str) -> None:
    """One line on stderr, prefixed with the program name; never raises (stderr may be gone)."""
    try:
        print(f"sentictl: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
