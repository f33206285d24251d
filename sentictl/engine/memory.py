"""Process memory around model loads: what glibc keeps after ONNX Runtime loads, frees or reloads a model.

Every function here is a no-op where the C library lacks the call (not glibc).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable


def return_freed_memory() -> None:
    """Give the heap memory ORT freed while loading back to the system (glibc only; else a no-op).

    Pre-packing copies every quantized weight and frees the original, but glibc keeps freed
    blocks for reuse: without this, a bert-base int8 process holds ~75 MB it no longer uses."""
    try:
        # The symbols already loaded into this process, libc's among them (no library search).
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def fix_mmap_threshold(threshold: int = 128 * 1024) -> None:
    """Keep glibc's mmap threshold where it starts (glibc only; else a no-op), for processes that reload models.

    glibc raises the threshold each time a large block is freed (pre-packing frees every original
    weight), so a model loaded later gets its weights from the heap, where a freed model leaves
    holes the next one does not fit: a server that reloaded bert-base int8 six times held 100 MB
    more than at start; with the threshold fixed, 13 MB (benchmarks/bench_reload.py). Large blocks
    stay mapped and are returned when freed."""
    try:
        ctypes.CDLL(None).mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):
        pass


def release_when_freed(model: object, then: Callable[[], object] | None = None) -> None:
    """Give the memory of a model that is being replaced (a reload) back to the system once the last
    reference to it is dropped (requests in flight may still hold it): its session's weights and
    arena would otherwise stay in glibc's free lists. ``then``: called after that (e.g. to log it)."""

    def freed() -> None:
        return_freed_memory()
        if then is not None:
            then()

    weakref.finalize(model, freed)
