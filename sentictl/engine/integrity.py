"""Only verified bytes run under a model's fingerprint: sha256 checks, verified stamps, private copies.

A model's fingerprint (the key of its results in the shared cache) includes the sha256 that
``manifest.json`` records for each file, so a file edited on disk must never be run under it.
:func:`read_verified` reads a file into private memory once and checks exactly those bytes; the
engine builds its tokenizer and ONNX Runtime session from them, so nothing on disk is read after
the check: a file replaced, edited or truncated under a running process changes nothing it runs
(and can no longer kill it with SIGBUS, as a mapped file could).

Hashing a large ``.onnx`` on every cold start would be slow, so a file that was hashed once (by
``sentictl export`` or by a first load) gets a *stamp* in the user cache directory:
``<user cache dir>/verified/<st_dev>-<st_ino>.json`` holding its size, mtime_ns, ctime_ns, inode,
device and sha256. A later load trusts the file without hashing it when all of those still match.
The mtime can be set back from user space (``os.utime``, ``tar --mtime``) and a new file may reuse
a deleted one's inode, but the ctime cannot be set: any write, chmod, rename or new file moves it,
so a stamp that names it is voided by every change (a mismatch means: hash again). Keying by
(device, inode) keeps stamps valid across a rename of the *folder* (export writes a temporary
directory and renames it into place). Stamps never go into the model directory: a bundled model is read-only.

Modes: ``always`` hashes every time (serve and bridge: they run for hours, hashing is cheap next
to that); ``stamp`` trusts a matching stamp and hashes otherwise (score, eval, bench, info);
``off`` checks nothing (``--no-verify``): the caller must then run the model under a fingerprint
that can never equal the genuine one (:func:`unverified_fingerprint`).

A folder optimum wrote has no manifest, hence no recorded sha256 to check: its files' hashes
*are* its identity (:func:`current_sha256`), and stamps spare the hashing on later loads the same way.
Every file its graph names as external data counts (:func:`external_locations`: ONNX lets
``location`` be any file name, e.g. ``weights.bin``).

This module is on the hot path: hashlib, os, stat, orjson and platformdirs only (the graph is
parsed with a few lines of protobuf wire-format reading, never with the onnx package).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import orjson

from ..errors import IntegrityError, ManifestError

MODES = ("always", "stamp", "off")
_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, streamed."""
    return _hash(path)[0]


def _note_hash(path: str | os.PathLike) -> None:
    """Called whenever a file's bytes are hashed (a seam for tests that count hashing)."""


def _hash(path: str | os.PathLike) -> tuple[str, os.stat_result | None]:
    """The sha256 of a file, and its stat when it did not change while it was read (else None)."""
    _note_hash(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
        after = os.fstat(fh.fileno())
    return digest.hexdigest(), before if _identity(before) == _identity(after) else None


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
    # ctime_ns: what user space cannot set back (see the module docstring). A stamp written before
    # it was recorded lacks it, so it no longer matches: the file is hashed once more and re-stamped.
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


def read_stamp(path: str | os.PathLike, st: os.stat_result | None = None) -> str | None:
    """The sha256 a valid stamp records for this file, or None (no stamp, or the file changed)."""
    try:
        st = st or os.stat(path)
        stamp = orjson.loads(_stamp_path(st).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return _stamped_sha(stamp, st)


def _stamped_sha(stamp: object, st: os.stat_result) -> str | None:
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


def check_file(
    path: str | os.PathLike, expected: str | None, mode: str = "stamp", manifest_name: str = "manifest.json"
) -> None:
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


# ------------------------------------------------------------------ verified bytes in private memory
def read_private(path: str | os.PathLike) -> tuple[bytes, os.stat_result | None]:
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
    steady = len(data) == before.st_size and not grew and _identity(before) == _identity(after)
    return data, before if steady else None


def _digest(path: str | os.PathLike, data: bytes) -> str:
    """The sha256 of bytes read from ``path`` (one call: hashlib lets other threads run meanwhile)."""
    _note_hash(path)
    return hashlib.sha256(data).hexdigest()


def read_verified(
    path: str | os.PathLike, expected: str | None, mode: str = "stamp", manifest_name: str = "manifest.json"
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
        raise IntegrityError(
            f"{path} does not match the sha256 in {manifest_name}: re-run `sentictl export`, "
            f"or pass --no-verify for a folder edited on purpose"
        )
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
    source: str | os.PathLike,
    dest: str | os.PathLike,
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
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o400)
        copied = 0
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                if digest is not None:
                    digest.update(block)
                out.write(block)
                copied += len(block)
        after = os.fstat(fh.fileno())
    steady = copied == before.st_size and _identity(before) == _identity(after)
    if mode == "off":
        return None
    if digest is not None:
        actual = digest.hexdigest()
    elif steady:
        actual = stamped  # type: ignore[assignment]
    else:  # changed while copied: the stamp says nothing about the copy, which is hashed itself
        actual = _hash(dest)[0]
    if expected and actual != expected:
        os.unlink(dest)
        raise IntegrityError(
            f"{source} does not match the sha256 in {manifest_name}: re-run `sentictl export`, "
            f"or pass --no-verify for a folder edited on purpose"
        )
    if digest is not None and steady:
        write_stamp(source, actual, before)
    return actual


# ------------------------------------------------------------------ the files a graph reads
# ONNX's protobuf field numbers (onnx.proto) on the way to every TensorProto a model may hold.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _fields(buf: memoryview, start: int = 0, end: int | None = None) -> Iterable[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of one protobuf message; a length-delimited
    field's span is its payload, a scalar's is empty (its bytes are skipped, never decoded)."""
    end = len(buf) if end is None else end
    pos = start

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
            yield number, wire, pos, pos
        elif wire == 1:
            pos += 8
            yield number, wire, pos, pos
        elif wire == 5:
            pos += 4
            yield number, wire, pos, pos
        elif wire == 2:
            size = varint()
            if pos + size > end:
                raise ValueError("field runs past its message")
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message runs past its end")


def external_locations(graph: bytes | bytearray | memoryview) -> list[str]:
    """Every file an ONNX model's tensors keep their bytes in (``external_data`` ``location``), in first-seen order.

    Walks initializers, sparse initializers, tensors in node attributes, subgraphs and functions.
    Raises ValueError when the bytes are not a readable ONNX model.
    """
    buf = memoryview(graph)
    found: dict[str, None] = {}

    def sub(start: int, end: int, wanted: dict[int, object]) -> None:
        for number, wire, s, e in _fields(buf, start, end):
            visit = wanted.get(number)
            if wire == 2 and visit is not None:
                visit(s, e)  # type: ignore[operator]

    def tensor(start: int, end: int) -> None:
        for number, wire, s, e in _fields(buf, start, end):
            if number != _TENSOR_EXTERNAL or wire != 2:
                continue
            entry = {k: bytes(buf[a:b]) for k, w, a, b in _fields(buf, s, e) if w == 2}
            if entry.get(_ENTRY_KEY) == b"location" and _ENTRY_VALUE in entry:
                found.setdefault(entry[_ENTRY_VALUE].decode("utf-8", "replace"), None)

    def sparse(start: int, end: int) -> None:
        sub(start, end, {_SPARSE_VALUES: tensor, _SPARSE_INDICES: tensor})

    def attribute(start: int, end: int) -> None:
        sub(
            start,
            end,
            {
                _ATTR_T: tensor,
                _ATTR_TENSORS: tensor,
                _ATTR_G: graph_,
                _ATTR_GRAPHS: graph_,
                _ATTR_SPARSE: sparse,
                _ATTR_SPARSES: sparse,
            },
        )

    def node(start: int, end: int) -> None:
        sub(start, end, {_NODE_ATTRIBUTE: attribute})

    def graph_(start: int, end: int) -> None:
        sub(start, end, {_GRAPH_NODE: node, _GRAPH_INITIALIZER: tensor, _GRAPH_SPARSE: sparse})

    def function(start: int, end: int) -> None:
        sub(start, end, {_FUNCTION_NODE: node})

    try:
        sub(0, len(buf), {_MODEL_GRAPH: graph_, _MODEL_FUNCTIONS: function})
    except (IndexError, RecursionError) as exc:
        raise ValueError(f"not a readable ONNX model ({type(exc).__name__})") from None
    return list(found)


def safe_location(location: str) -> bool:
    """Whether an external-data location names a file inside the model's own folder (relative, no ``..``)."""
    parts = location.replace("\\", "/").split("/")
    return (
        bool(location)
        and not os.path.isabs(location)
        and ".." not in parts
        and "" not in parts
        and not (len(location) > 1 and location[1] == ":")
    )
