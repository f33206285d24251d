"""Verified stamps: a file hashed once is trusted again, without hashing, while it is unchanged.

Hashing a large ``.onnx`` on every cold start would be slow, so a file that was hashed once (by
``sentictl export`` or by a first load) gets a *stamp* in the user cache directory:
``<user cache dir>/verified/<st_dev>-<st_ino>.json`` holding its size, mtime_ns, ctime_ns, inode,
device and sha256. A later load trusts the file without hashing it when all of those still match.
The mtime can be set back from user space (``os.utime``, ``tar --mtime``) and a new file may reuse
a deleted one's inode, but the ctime cannot be set: any write, chmod, rename or new file moves it,
so a stamp that names it is voided by every change (a mismatch means: hash again). Keying by
(device, inode) keeps stamps valid across a rename of the *folder* (export writes a temporary
directory and renames it into place). Stamps never go into the model directory: a bundled model is read-only.

What trusts a stamp, and when, is :mod:`sentictl.engine.integrity`'s business.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson


def stamp_dir() -> Path:
    """Where stamps live: ``verified/`` in the user cache directory (never in a model directory)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sentictl")) / "verified"


def _stamp_path(st: os.stat_result) -> Path:
    return stamp_dir() / f"{st.st_dev}-{st.st_ino}.json"


def identity(st: os.stat_result) -> dict[str, int]:
    """What a stamp records of a file besides its sha256; equal identities: the same, unchanged file."""
    # ctime_ns: what user space cannot set back (see the module docstring). A stamp written before
    # it was recorded lacks it, so it no longer matches: the file is hashed once more and re-stamped.
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


def read_stamp(path: str | os.PathLike[str], st: os.stat_result | None = None) -> str | None:
    """The sha256 a valid stamp records for this file, or None (no stamp, or the file changed)."""
    try:
        st = st or os.stat(path)
        stamp = orjson.loads(_stamp_path(st).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return _stamped_sha(stamp, st)


def _stamped_sha(stamp: object, st: os.stat_result) -> str | None:
    if not isinstance(stamp, dict) or any(stamp.get(k) != v for k, v in identity(st).items()):
        return None
    sha = stamp.get("sha256")
    return sha if isinstance(sha, str) else None


def write_stamp(path: str | os.PathLike[str], sha256: str, st: os.stat_result | None = None) -> bool:
    """Record that this file (as it is now, or as ``st`` saw it) has this sha256.

    Atomic (a temporary file renamed into place). A stamp that cannot be written (read-only or
    unusable cache directory) is skipped silently: the next load just hashes the file again.
    Returns whether a stamp was written.
    """
    tmp: Path | None = None
    try:
        st = st or os.stat(path)
        target = _stamp_path(st)
        target.parent.mkdir(parents=True, exist_ok=True)
        record = {**identity(st), "sha256": sha256, "path": os.path.abspath(path)}
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        tmp.write_bytes(orjson.dumps(record))
        os.replace(tmp, target)
        return True
    except OSError:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        return False
