"""The cache path as an attacker would prepare it: symlinks, hard links and other users' files in a
sticky world-writable directory (issue 17, item 2), and the modes of the files the cache creates.

Real files, a real symlink owned by another user (``nobody``, made with lchown: the tests run as
root, as the attacked `sentictl score` does), a real SQLite file as the victim, and the real CLI in
a subprocess. The check is sentictl's own: it must hold whatever the host's fs.protected_symlinks
says (with it on, the kernel would refuse too; sentictl refuses first, with its own line).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from conftest import sentictl_env
from sentictl.engine.cache import ResultCache
from sentictl.errors import CacheError

NOBODY = 65534
pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="making a file another user's needs root"
)
TEXTS = ["Profit rose sharply.", "Losses widened.", "The board met on Tuesday."]


def result() -> dict:
    return {"label": "neutral", "score": 1.0, "scores": {"neutral": 1.0}, "model": "m"}


@pytest.fixture
def shared(tmp_path) -> Path:
    """A sticky directory anyone may write, owned by root: /tmp's shape."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    return d


@pytest.fixture
def victim(tmp_path) -> Path:
    """Someone's application database, in rollback-journal mode, outside the shared directory."""
    d = tmp_path / "victim"
    d.mkdir()
    db = d / "app.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO accounts (name) VALUES ('alice')")
    conn.commit()
    conn.close()
    return db


def planted(link: Path, target: Path | str, uid: int = NOBODY) -> Path:
    """A symlink at link to target, owned by uid (another user's, by default)."""
    os.symlink(target, link)
    os.lchown(link, uid, uid)
    return link


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untouched(db: Path, before: str) -> None:
    """The victim is byte-identical: not switched to WAL, no results table, no files beside it."""
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["accounts"]
    finally:
        conn.close()


def score(cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`sentictl score --cache CACHE` on the bundled model, as a user runs it."""
    exe = Path(sys.executable).with_name("sentictl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sentictl"]
    return subprocess.run(
        [*cmd, "score", "--cache", str(cache)],
        input="\n".join(TEXTS).encode() + b"\n",
        capture_output=True,
        env=sentictl_env(),
        cwd=cwd,
        timeout=300,
    )


def cache_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if "result cache" in line]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize("dangling", [False, True], ids=["existing-victim", "dangling"])
def test_score_does_not_follow_another_users_symlink(shared, victim, tmp_path, dangling):
    target = victim.parent / "created.sqlite" if dangling else victim
    before = digest(victim)
    link = planted(shared / "cache.db", target)
    run = score(link, tmp_path)
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    out = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert [r["text"] for r in out] == TEXTS and all(r["cache_hit"] is False for r in out)
    [warning] = cache_lines(run.stderr)
    assert "symbolic link owned by uid 65534" in warning and "going on without it" in warning
    untouched(victim, before)
    assert not (victim.parent / "created.sqlite").exists()
    assert os.path.islink(link) and sorted(p.name for p in shared.iterdir()) == ["cache.db"]


def test_cache_command_refuses_it_with_exit_1(shared, victim, tmp_path):
    before = digest(victim)
    link = planted(shared / "cache.db", victim)
    exe = Path(sys.executable).with_name("sentictl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sentictl"]
    for action in ("stats", "clear"):
        run = subprocess.run(
            [*cmd, "cache", action, "--cache", str(link)],
            capture_output=True,
            env=sentictl_env(),
            cwd=tmp_path,
            timeout=120,
        )
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr.decode() and run.stdout == b""
        [line] = run.stderr.decode().splitlines()
        assert "symbolic link owned by uid 65534" in line
    untouched(victim, before)


# ------------------------------------------------------------------------------ ResultCache itself
@pytest.mark.parametrize("dangling", [False, True], ids=["existing-victim", "dangling"])
def test_result_cache_refuses_the_link_and_goes_on_without_it(shared, victim, capsys, dangling):
    target = victim.parent / "created.sqlite" if dangling else victim
    before = digest(victim)
    link = planted(shared / "cache.db", target)
    cache = ResultCache(link)
    assert cache.put_many("ns", [("x", result())]) == 0
    assert cache.get_many("ns", ["x"]) == {}
    assert cache.failures >= 1
    cache.close()
    assert len(cache_lines(capsys.readouterr().err.encode())) == 1
    with pytest.raises(CacheError, match="symbolic link owned by uid 65534"):
        ResultCache(link, strict=True)
    untouched(victim, before)
    assert not (victim.parent / "created.sqlite").exists()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal", ".lock"])
def test_a_planted_companion_link_is_refused(shared, victim, suffix):
    """SQLite's -wal/-shm/-journal and the rotation lock sit beside the file: a link there is a link too."""
    before = digest(victim)
    planted(shared / f"cache.db{suffix}", victim)
    with pytest.raises(CacheError, match=f"cache.db{suffix} is a symbolic link owned by uid 65534"):
        ResultCache(shared / "cache.db", strict=True)
    untouched(victim, before)
    assert not (shared / "cache.db").exists()


def test_a_directory_link_is_followed_as_the_kernels_protected_symlinks_would(shared, tmp_path, victim):
    """Another user's symlink to a directory, in a sticky world-writable directory, is not followed;
    one owned by this user or by that directory's owner is, and so is any in a private directory."""
    before = digest(victim)
    planted(shared / "dir", victim.parent)
    with pytest.raises(CacheError, match="shared/dir is a symbolic link owned by uid 65534 in a directory anyone"):
        ResultCache(shared / "dir" / "cache.db", strict=True)
    untouched(victim, before)

    mine = tmp_path / "mine"
    mine.mkdir()
    planted(shared / "ours", mine, uid=os.geteuid())
    private = tmp_path / "private"
    private.mkdir()
    planted(private / "theirs", mine)  # not a shared directory: the kernel would follow it too
    for path in (shared / "ours" / "a.db", private / "theirs" / "b.db"):
        with ResultCache(path, strict=True) as cache:
            assert cache.put_many("ns", [("x", result())]) == 1
    assert (mine / "a.db").is_file() and (mine / "b.db").is_file()


def test_a_symlink_of_ones_own_keeps_working(shared, tmp_path):
    """Users symlink their cache (to a bigger disk, say): their own link is followed, and SQLite's
    -wal/-shm live beside the real file."""
    real_dir = tmp_path / "disk"
    real_dir.mkdir()
    link = planted(shared / "cache.db", real_dir / "results.sqlite", uid=os.geteuid())
    with ResultCache(link, strict=True) as cache:
        assert cache.put_many("ns", [("x", result())]) == 1
        assert cache.get_many("ns", ["x"]) == {"x": result()}
        assert cache.stats()["entries"] == 1
        assert (real_dir / "results.sqlite-wal").exists() and not (shared / "cache.db-wal").exists()
    assert os.path.islink(link)


def test_another_users_file_or_a_hard_link_in_a_shared_directory_is_refused(shared, victim):
    """What fs.protected_regular refuses, and a second name for a file (a hard link another user
    made): either could be anything by the time SQLite opens it."""
    before = digest(victim)
    os.link(victim, shared / "cache.db")
    with pytest.raises(CacheError, match="has other names"):
        ResultCache(shared / "cache.db", strict=True)
    os.unlink(shared / "cache.db")
    untouched(victim, before)

    theirs = shared / "theirs.db"
    theirs.write_bytes(b"")
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(CacheError, match="belongs to uid 65534"):
        ResultCache(theirs, strict=True)
    assert theirs.read_bytes() == b""


# ------------------------------------------------------------------------------ modes
def test_cache_files_are_0600_and_new_directories_0700(tmp_path):
    """They hold every text verbatim; a permissive umask does not widen them."""
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    path = existing / "new" / "deeper" / "cache.sqlite"
    old = os.umask(0)
    try:
        cache = ResultCache(path, strict=True)
        cache.put_many("ns", [("x", result())])
        # While a connection is open SQLite keeps its -wal and -shm: 0600 like the database.
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert mode(name) == 0o600, name
        cache.close()
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(existing / "new") == 0o700 and mode(existing / "new" / "deeper") == 0o700
    assert mode(existing) == 0o755  # a directory that was there is left alone


def test_a_damaged_file_moved_aside_keeps_its_mode_and_the_lock_is_0600(tmp_path):
    path = tmp_path / "cache.sqlite"
    with ResultCache(path, strict=True) as cache:
        cache.put_many("ns", [("x", result())])
    path.write_bytes(os.urandom(8192))  # "file is not a database"
    old = os.umask(0)
    try:
        with ResultCache(path, strict=True) as cache:
            assert cache.put_many("ns", [("y", result())]) == 1
    finally:
        os.umask(old)
    [moved] = tmp_path.glob("cache.sqlite.corrupt-*")
    assert mode(moved) == 0o600
    assert mode(tmp_path / "cache.sqlite.lock") == 0o600
    assert mode(path) == 0o600


def test_root_beside_a_users_cache_leaves_the_files_that_users():
    """sudo on a user's own cache: the -wal/-shm sentictl creates are the database owner's, as
    SQLite makes them, so the user's next run can still open them."""
    top = Path(tempfile.mkdtemp())  # pytest's tmp_path is root's 0700: the user could not reach it
    try:
        top.chmod(0o711)
        _root_beside_a_users_cache(top / "home")
    finally:
        shutil.rmtree(top)


def _root_beside_a_users_cache(home: Path) -> None:
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    path = home / "cache.sqlite"
    pid = os.fork()
    if pid == 0:  # the user makes the cache
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            ResultCache(path, strict=True).close()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    with ResultCache(path, strict=True) as cache:  # root uses it
        assert cache.put_many("ns", [("x", result())]) == 1
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            st = os.lstat(name)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o600), name
