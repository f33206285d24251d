"""Only verified bytes run under a model's fingerprint: sha256 checks and *verified stamps*.

A model's fingerprint (the key of its results in the shared cache) includes the sha256 that
``manifest.json`` records for each file, so a file edited on disk must never be run under it.
Hashing a large ``.onnx`` on every cold start would be slow, so a file that was hashed once (by
``sentictl export`` or by a first load) gets a *stamp* in the user cache directory:
``<user cache dir>/verified/<st_dev>-<st_ino>.json`` holding its size, mtime_ns, inode, device
and sha256. A later load trusts the file without hashing it when all of those still match.
Keying by (device, inode) keeps stamps valid across a rename (export writes a temporary
directory and renames it into place); any write to the file changes its mtime, which voids the
stamp. Stamps never go into the model directory: a bundled model is read-only.

Modes: ``always`` hashes every time (serve and bridge: they run for hours, hashing is cheap next
to that); ``stamp`` trusts a matching stamp and hashes otherwise (score, eval, bench, info);
``off`` checks nothing (``--no-verify``): the caller must then run the model under a fingerprint
that can never equal the genuine one (:func:`unverified_fingerprint`).

A folder optimum wrote has no manifest, hence no recorded sha256 to check: its files' hashes
*are* its identity (:func:`current_sha256`), and stamps spare the hashing on later loads the same way.

This module is on the hot path: hashlib, os, orjson and platformdirs only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import orjson

from ..errors import IntegrityError

MODES = ("always", "stamp", "off")
_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, streamed."""
    return _hash(path)[0]


def _hash(path: str | os.PathLike) -> tuple[str, os.stat_result | None]:
    """The sha256 of a file, and its stat when it did not change while it was read (else None)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
        after = os.fstat(fh.fileno())
    steady = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    return digest.hexdigest(), before if steady else None


def hash_and_stamp(path: str | os.PathLike) -> str:
    """The sha256 of a file just written (export), stamped as verified for later loads."""
    sha, st = _hash(path)
    if st is not None:
        write_stamp(path, sha, st)
    return sha


def stamp_dir() -> Path:
    """Where stamps live: ``verified/`` in the user cache directory (never in a model directory)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sentictl")) / "verified"


def _stamp_path(st: os.stat_result) -> Path:
    return stamp_dir() / f"{st.st_dev}-{st.st_ino}.json"


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def read_stamp(path: str | os.PathLike, st: os.stat_result | None = None) -> str | None:
    """The sha256 a valid stamp records for this file, or None (no stamp, or the file changed)."""
    try:
        st = st or os.stat(path)
        stamp = orjson.loads(_stamp_path(st).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(stamp, dict) or any(stamp.get(k) != v for k, v in _identity(st).items()):
        return None
    sha = stamp.get("sha256")
    return sha if isinstance(sha, str) else None


def write_stamp(path: str | os.PathLike, sha256: str, st: os.stat_result | None = None) -> bool:
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
        record = {**_identity(st), "sha256": sha256, "path": os.path.abspath(path)}
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


def matches(path: str | os.PathLike, expected: str, mode: str = "stamp") -> bool:
    """Whether the file's bytes have the expected sha256 (``off``: assumed, nothing is read).

    ``stamp`` trusts a valid stamp recording ``expected``; otherwise (and always in ``always``
    mode) the file is hashed, and stamped when it matches.
    """
    if mode not in MODES:
        raise ValueError(f"unknown verify mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "off":
        return True
    if mode == "stamp" and read_stamp(path) == expected:
        return True
    actual, st = _hash(path)
    if actual != expected:
        return False
    if st is not None:
        write_stamp(path, actual, st)
    return True


def current_sha256(path: str | os.PathLike, mode: str = "stamp") -> str:
    """The sha256 of a file no manifest records a hash for (a folder optimum wrote): it becomes the fingerprint.

    ``stamp`` trusts a valid stamp, so a second run does not hash again; ``always`` hashes every
    time. Either way a hash just computed is stamped. (``off`` is the caller's business: it must
    not call this, and runs under an unverified fingerprint instead.)
    """
    if mode not in MODES or mode == "off":
        raise ValueError(f"current_sha256 needs mode 'stamp' or 'always', not {mode!r}")
    if mode == "stamp":
        stamped = read_stamp(path)
        if stamped is not None:
            return stamped
    return hash_and_stamp(path)


def check_file(path: str | os.PathLike, expected: str | None, mode: str = "stamp",
               manifest_name: str = "manifest.json") -> None:
    """Raise IntegrityError when the file does not have the sha256 its manifest records.

    A manifest entry without a sha256 cannot be checked and passes; a missing file is left to
    the caller (which says the directory is incomplete).
    """
    if not expected or mode == "off" or not os.path.isfile(path):
        return
    if not matches(path, expected, mode):
        raise IntegrityError(
            f"{path} does not match the sha256 in {manifest_name}: re-run `sentictl export`, "
            f"or pass --no-verify for a folder edited on purpose"
        )


def unverified_fingerprint(fingerprint: str, paths: Iterable[str | os.PathLike]) -> str:
    """A fingerprint for files run without verification: never the genuine one.

    Derived from the manifest's fingerprint, the word "unverified" and each file's size,
    mtime_ns and inode, so results of an edited file never land in the genuine model's cache
    entries (and an edit made later gets yet another fingerprint).
    """
    files = []
    for path in paths:
        try:
            st = os.stat(path)
            files.append([st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
        except OSError:
            files.append([os.path.abspath(path), None, None, None, None])
    identity = {"fingerprint": fingerprint, "unverified": True, "files": files}
    return "u" + hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:15]
