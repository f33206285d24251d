"""Opening the cache file the way the kernel's ``fs.protected_symlinks`` would, whatever the host sets.

The cache path may lie in a directory others can write (``/tmp``), and sentictl may run as root, so
a symlink at the cache path (or at its -wal, -shm, -journal or .lock) owned by another user is never
followed, and the cache's files are created 0600 (their directory 0700): they hold every text
verbatim. :func:`open_path` vets (and creates) them; SQLite is then given the real path it returns.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

# The files SQLite (and the cache's set-aside of a damaged file) keep beside the database, by suffix.
COMPANIONS = ("-wal", "-shm", "-journal", ".lock")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeCachePath(OSError):
    """The cache path is a symlink (or file) sentictl will not open: another user could aim it anywhere."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)


def _refuse_link(link: str, st: os.stat_result, euid: int) -> None:
    if st.st_uid != euid:
        raise UnsafeCachePath(
            f"{link} is a symbolic link owned by uid {st.st_uid}, not by this process's "
            f"uid {euid}: sentictl does not follow it; remove it or choose another --cache"
        )


def _shared_dir(st: os.stat_result) -> bool:
    """A sticky directory everyone may write (/tmp): where the kernel's protected_* rules apply."""
    return bool(st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH)


def _resolve(path: Path) -> tuple[str, list[str]]:
    """The cache path with every symlink resolved, each checked before it is followed; and the names
    still missing (directories to create, then the file) below the deepest one that exists.

    The file's own symlink (the last name, also when a chain of links ends there) must be owned by
    this process's user. A directory symlink on the way is followed as the kernel's
    protected_symlinks follows it: anywhere but in a sticky world-writable directory, and there only
    when it is owned by this user or by that directory's owner (/tmp's root, say).
    """
    euid = os.geteuid()
    if path.is_absolute():
        done, todo = "/", list(path.parts[1:])
    else:
        done, todo = os.getcwd(), list(path.parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            done = os.path.dirname(done)
            continue
        here = os.path.join(done, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if ".." in todo:
                raise
            return done, [part, *todo]
        if not stat.S_ISLNK(st.st_mode):
            done = here
            continue
        if not todo:
            _refuse_link(here, st, euid)
        else:
            parent = os.stat(done)
            if _shared_dir(parent) and st.st_uid not in (euid, parent.st_uid):
                raise UnsafeCachePath(
                    f"{here} is a symbolic link owned by uid {st.st_uid} in a directory "
                    f"anyone may write: sentictl does not follow it; choose another --cache"
                )
        hops += 1
        if hops > 40:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
        target = Path(os.readlink(here))
        if target.is_absolute():
            done, todo = "/", [*target.parts[1:], *todo]
        else:
            todo = [*target.parts, *todo]
    return done, []


def _check_file(name: str, euid: int, directory: os.stat_result) -> os.stat_result | None:
    """lstat of one of the cache's files, refused when another user could have aimed it anywhere."""
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        _refuse_link(name, st, euid)
    elif _shared_dir(directory) and (st.st_uid not in (euid, directory.st_uid) or st.st_nlink > 1):
        # What fs.protected_regular refuses, and a second name (a hard link another user made to
        # their victim): such a file can be anything by the time SQLite opens it.
        raise UnsafeCachePath(
            f"{name} belongs to uid {st.st_uid} or has other names, in a directory anyone "
            f"may write: sentictl does not open it; choose another --cache"
        )
    return st


def _create(name: str) -> bool:
    """Create an empty 0600 file, never through a symlink; False when the name exists already."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def open_path(path: Path) -> tuple[str, tuple[int, int]]:
    """The real path SQLite may open for the cache at path, its files vetted and, where missing,
    created 0600 (directories 0700); and the (device, inode) the database file must still have once
    SQLite has opened it. Raises UnsafeCachePath (or OSError) instead.

    Creating a missing file (the database, its -wal and -shm; the -journal a fresh one needs while
    it is switched to WAL) with O_CREAT|O_EXCL|O_NOFOLLOW decides a race with another user at once:
    either the name is this process's file, which in a sticky directory nobody else can replace,
    or it already exists and is checked like any other. SQLite gives its -wal/-shm/-journal the
    database file's mode (and, as root, owner), so a 0600 database keeps them 0600 too.
    """
    euid = os.geteuid()
    for _ in range(5):
        parent, missing = _resolve(path)
        if len(missing) > 1:
            for name in missing[:-1]:  # directories sentictl creates: 0700, as the files are 0600
                parent = os.path.join(parent, name)
                try:
                    os.mkdir(parent, 0o700)
                except FileExistsError:
                    break
            else:
                missing = missing[-1:]
            if len(missing) > 1:
                continue  # someone else made one of them meanwhile: resolve again
        real = os.path.join(parent, missing[0]) if missing else parent
        directory = os.stat(os.path.dirname(real))
        st = _check_file(real, euid, directory)
        for suffix in COMPANIONS:
            _check_file(real + suffix, euid, directory)
        created = False
        if st is None:
            if not _create(real):
                continue  # appeared between the check and now: check it again
            created = True
            st = os.lstat(real)
        elif stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"{real} is a directory")
        for suffix in ("-wal", "-shm", "-journal") if created else ("-wal", "-shm"):
            if not _create(real + suffix):
                _check_file(real + suffix, euid, directory)
        return real, (st.st_dev, st.st_ino)
    raise UnsafeCachePath(f"{path} kept changing while sentictl opened it")


def open_lock(real: str) -> int:
    """A descriptor of the lock file beside the database at real (``<real>.lock``): created 0600 when
    missing, never opened through a symlink."""
    return os.open(f"{real}.lock", os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
