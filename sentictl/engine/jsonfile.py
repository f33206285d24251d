"""Reading a model folder's small JSON files (manifest, config, tokenizer config) with bounds.

A hostile or broken folder must cost one line, not a 50-line RecursionError or gigabytes of
memory: the file's size is checked before it is read, and any nesting depth orjson refuses
(it stops at 1,024 levels, where Python's json module recurses into a RecursionError) is a
ManifestError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..errors import ManifestError

# Model-folder JSON files are kilobytes; a tokenizer.json with a large vocabulary a few tens of MB.
SMALL_JSON_BYTES = 16 << 20


def read_object(path: Path, what: str, hint: str = "", limit: int = SMALL_JSON_BYTES) -> dict[str, Any]:
    """The JSON object in ``path``; FileNotFoundError passes through, anything else unreadable is one
    ManifestError ("... the {what} cannot be read; {hint}")."""
    end = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ManifestError(f"{path} cannot be read ({exc.strerror or exc}): the {what} cannot be read{end}") from None
    if len(data) > limit:
        raise ManifestError(
            f"{path} is over {limit >> 20} MB: too large for a {what}{end or '; is it the right file?'}"
        )
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
        raise ManifestError(f"{path} is not readable JSON ({reason}): the {what} cannot be read{end}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{path} is not a JSON object: the {what} cannot be read{end}")
    return value
