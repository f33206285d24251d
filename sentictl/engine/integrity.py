"""Only verified bytes run under a model's fingerprint: sha256 checks, verified stamps, private copies.

A model's fingerprint (the key of its results in the shared cache) includes the sha256 that
``manifest.json`` records for each file, so a file edited on disk must never be run under it.
:func:`read_verified` reads a file into private memory once and checks exactly those bytes; the
engine builds its tokenizer and ONNX Runtime session from them, so nothing on disk is read after
the check: a file replaced, edited or truncated under a running process changes nothing it runs
(and can no longer kill it with SIGBUS, as a mapped file could).

Hashing a large ``.onnx`` on every cold start would be slow, so a file that was hashed once gets a
*stamp* (:mod:`sentictl.engine.stamps`: its size, mtime_ns, ctime_ns, inode, device and sha256,
voided by any change), and a later load may trust it without hashing it.

Modes: ``always`` hashes every time (serve and bridge: they run for hours, hashing is cheap next
to that); ``stamp`` trusts a matching stamp and hashes otherwise (score, eval, bench, info);
``off`` checks nothing (``--no-verify``): the caller must then run the model under a fingerprint
that can never equal the genuine one (:func:`unverified_fingerprint`).

A folder optimum wrote has no manifest, hence no recorded sha256 to check: its files' hashes
*are* its identity (:func:`current_sha256`), and stamps spare the hashing on later loads the same way.
Every file its graph names as external data counts (:func:`external_locations`, from
:mod:`sentictl.engine.onnxdata`).

This module is on the hot path: hashlib, os, stat, orjson and platformdirs only.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import orjson

from ..errors import IntegrityError, ManifestError

# Part of this module's API too (verified.py, export and the tests use them from here): exported "as" themselves.
from .onnxdata import external_locations as external_locations
from .onnxdata import safe_location as safe_location
from .stamps import identity
from .stamps import read_stamp as read_stamp
from .stamps import stamp_dir as stamp_dir
from .stamps import write_stamp as write_stamp

MODES = ("always", "stamp", "off")
_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, streamed."""
    return _hash(path)[0]


def _note_hash(path: str | os.PathLike[str]) -> None:
    """Called whenever a file's bytes are hashed (a seam for tests that count hashing)."""


def _hash(path: str | os.PathLike[str]) -> tuple[str, os.stat_result | None]:
    """The sha256 of a file, and its stat when it did not change while it was read (else None)."""
    _note_hash(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
        after = os.fstat(fh.fileno())
    return digest.hexdigest(), before if identity(before) == identity(after) else None


def hash_and_stamp(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file just written (export), stamped as verified for later loads."""
    sha, st = _hash(path)
    if st is not None:
        write_stamp(path, sha, st)
    return sha


def matches(path: str | os.PathLike[str], expected: str, mode: str = "stamp") -> bool:
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


def current_sha256(path: str | os.PathLike[str], mode: str = "stamp") -> str:
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


def check_file(
    path: str | os.PathLike[str], expected: str | None, mode: str = "stamp", manifest_name: str = "manifest.json"
) -> None:
    """Raise IntegrityError when the file does not have the sha256 its manifest records.

    A manifest entry without a sha256 cannot be checked and passes; a missing file is left to
    the caller (which says the directory is incomplete).
    """
    if not expected or mode == "off" or not os.path.isfile(path):
        return
    if not matches(path, expected, mode):
        raise _mismatch(path, manifest_name)


def unverified_fingerprint(fingerprint: str, paths: Iterable[str | os.PathLike[str]]) -> str:
    """A fingerprint for files run without verification: never the genuine one.

    Derived from the manifest's fingerprint, the word "unverified" and each file's size,
    mtime_ns and inode, so results of an edited file never land in the genuine model's cache
    entries (and an edit made later gets yet another fingerprint).
    """
    files: list[list[int | str | None]] = []
    for path in paths:
        try:
            st = os.stat(path)
            files.append([st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
        except OSError:
            files.append([os.path.abspath(path), None, None, None, None])
    identity = {"fingerprint": fingerprint, "unverified": True, "files": files}
    return "u" + hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:15]


# ------------------------------------------------------------------ verified bytes in private memory
def read_private(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result | None]:
    """The bytes of a regular file, read once into memory this process owns, and its stat when
    the file did not change while it was read (else None: such bytes are never stamped).

    A file cut short while read gives fewer bytes (whose hash then cannot match); one that grew
    gives the bytes its size promised when it was opened.
    """
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise ManifestError(f"{path} is not a regular file: a model file must be one")
        data = fh.read(before.st_size)  # one allocation, immutable: what is checked is what runs
        grew = bool(fh.read(1))
        after = os.fstat(fh.fileno())
    steady = len(data) == before.st_size and not grew and identity(before) == identity(after)
    return data, before if steady else None


def _digest(path: str | os.PathLike[str], data: bytes) -> str:
    """The sha256 of bytes read from ``path`` (one call: hashlib lets other threads run meanwhile)."""
    _note_hash(path)
    return hashlib.sha256(data).hexdigest()


def read_verified(
    path: str | os.PathLike[str], expected: str | None, mode: str = "stamp", manifest_name: str = "manifest.json"
) -> tuple[bytes, str | None]:
    """Read a file into private memory and check exactly those bytes; returns (bytes, their sha256).

    ``expected``: the sha256 its manifest records. None for a file no manifest records (a folder
    optimum wrote): its sha256 is returned as its identity. ``stamp`` trusts a valid stamp for the
    file as it was while read (checked on the open file, before and after the read); ``always``
    hashes the bytes; ``off`` only reads them (the sha256 returned is None). A mismatch raises
    IntegrityError; bytes just hashed are stamped when the file held still while it was read.
    """
    if mode not in MODES:
        raise ValueError(f"unknown verify mode {mode!r}: use one of {', '.join(MODES)}")
    data, st = read_private(path)
    if mode == "off":
        return data, None
    if mode == "stamp" and st is not None:
        stamped = read_stamp(path, st)
        if stamped is not None and (expected is None or stamped == expected):
            return data, stamped
    actual = _digest(path, data)
    if expected and actual != expected:
        raise _mismatch(path, manifest_name)
    if st is not None:
        write_stamp(path, actual, st)
    return data, actual


def private_dir() -> Path | None:
    """A new folder only this process uses (0700), for the verified copies a model is loaded from; None
    when none can be made (the caller then keeps the bytes in memory instead).

    In the user cache directory (on disk, not in RAM like /tmp often is); folders that processes
    which no longer run left behind (killed while loading) are removed on the way.
    """
    import tempfile

    from platformdirs import user_cache_dir

    for base in (Path(user_cache_dir("sentictl")) / "loading", Path(tempfile.gettempdir())):
        try:
            base.mkdir(parents=True, exist_ok=True)
            if base.name == "loading":
                _remove_orphans(base)
            return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        except OSError:
            continue
    return None


def _remove_orphans(base: Path) -> None:
    import shutil

    for entry in base.iterdir():
        pid = entry.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def copy_verified(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    expected: str | None,
    mode: str = "stamp",
    manifest_name: str = "manifest.json",
) -> str | None:
    """Copy a file to ``dest`` (a new file in a private folder), checking the bytes as they are copied;
    returns their sha256 (None with mode ``off``).

    What lands in ``dest`` is exactly what was checked, whatever happens to ``source`` meanwhile or
    later: a large weights file is loaded (mapped) from such a copy, which nobody else can open,
    write or truncate, instead of from the model folder. ``expected`` and the modes as in
    :func:`read_verified`. A mismatch removes the copy and raises IntegrityError.
    """
    if mode not in MODES:
        raise ValueError(f"unknown verify mode {mode!r}: use one of {', '.join(MODES)}")
    with open(source, "rb") as fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise ManifestError(f"{source} is not a regular file: a model file must be one")
        stamped = read_stamp(source, before) if mode == "stamp" else None
        trusted = stamped is not None and (expected is None or stamped == expected)
        digest = None if mode == "off" or trusted else hashlib.sha256()
        if digest is not None:
            _note_hash(source)
        copied = _copy(fh, dest, digest)
        after = os.fstat(fh.fileno())
    steady = copied == before.st_size and identity(before) == identity(after)
    if mode == "off":
        return None
    if digest is not None:
        actual = digest.hexdigest()
    elif steady and stamped is not None:  # not hashed: the stamp was trusted
        actual = stamped
    else:  # changed while copied: the stamp says nothing about the copy, which is hashed itself
        actual = _hash(dest)[0]
    if expected and actual != expected:
        os.unlink(dest)
        raise _mismatch(source, manifest_name)
    if digest is not None and steady:
        write_stamp(source, actual, before)
    return actual


def _copy(fh: BinaryIO, dest: str | os.PathLike[str], digest: hashlib._Hash | None) -> int:
    """Copy the rest of fh to dest, a new file (0400, never through a symlink), hashing it on the way; how many bytes."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o400)
    copied = 0
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            if digest is not None:
                digest.update(block)
            out.write(block)
            copied += len(block)
    return copied


def _mismatch(path: str | os.PathLike[str], manifest_name: str) -> IntegrityError:
    return IntegrityError(
        f"{path} does not match the sha256 in {manifest_name}: re-run `sentictl export`, "
        f"or pass --no-verify for a folder edited on purpose"
    )
