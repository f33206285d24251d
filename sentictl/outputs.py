"""Where results and bad records go: writers (JSON lines, CSV) and output safety.

Writers turn a failed write into one OutputError line; outputs are checked against the inputs
(device and inode) before anything is opened for writing, so an output never clobbers an input.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import orjson

from .errors import OutputError


class OutputStream:
    """A binary output whose write failures (full disk, I/O error) become one OutputError line.

    ``what`` completes "cannot write ...", e.g. "results to stdout" or "--errors to bad.jsonl".
    BrokenPipeError passes through untouched: `sentictl score | head` stays quiet.
    """

    def __init__(self, stream: IO[bytes], what: str):
        self.stream = stream
        self.what = what

    def write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise output_failed(self.what, exc, self.stream) from None


def _as_output(stream: IO[bytes] | OutputStream, what: str | None) -> OutputStream:
    if isinstance(stream, OutputStream):
        return stream
    if what is None:
        what = "results to stdout" if _fileno(stream) == 1 else f"results to {getattr(stream, 'name', 'the output')}"
    return OutputStream(stream, what)


class JsonlWriter:
    """JSON lines on a binary stream."""

    def __init__(self, stream: IO[bytes] | OutputStream, what: str | None = None):
        self.out = _as_output(stream, what)

    def write(self, results: Sequence[dict[str, Any]]) -> None:
        self.out.write(b"".join(orjson.dumps(r, default=json_default) + b"\n" for r in results))


def json_default(value: Any) -> Any:
    """A kept value JSON has no type for (a Parquet decimal, bytes, a date): its text, precision intact."""
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode()
    return str(value)


class CsvWriter:
    """CSV with one probability column per label; the header comes from the first result.

    Rows are formatted in memory and written as bytes, so the stream is never wrapped (a
    TextIOWrapper would close stdout when collected) and write errors are reported like JSONL's.
    """

    def __init__(self, stream: IO[bytes] | OutputStream, what: str | None = None, keep: Sequence[str] = ()):
        self.out = _as_output(stream, what)
        self.labels: list[str] | None = None
        self.keep = list(keep)  # --keep columns, first (an absent value is an empty cell; JSON values as JSON)

    def write(self, results: Sequence[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        for r in results:
            if self.labels is None:
                self.labels = list(r["scores"])
                writer.writerow([*self.keep, "text", "label", "score", *self.labels, "model", "cache_hit", "truncated"])
            writer.writerow(
                [
                    *(_cell(r.get(k)) for k in self.keep),
                    r["text"],
                    r["label"],
                    r["score"],
                    *(r["scores"][k] for k in self.labels),
                    r["model"],
                    str(r["cache_hit"]).lower(),
                    str(r.get("truncated", False)).lower(),
                ]
            )
        self.out.write(buf.getvalue().encode("utf-8"))


def _cell(value: Any) -> str:
    """A kept value as a CSV cell: strings as they are, nothing as an empty cell, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=json_default).decode()


# ----------------------------------------------------------------------------- outputs never clobber inputs
def _fileno(stream: Any) -> int | None:
    try:
        fd: int = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _identity(st: os.stat_result) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a regular file; None for pipes, ttys, devices (they cannot be clobbered)."""
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _fd_identity(fd: int) -> tuple[int, int] | None:
    try:
        return _identity(os.fstat(fd))
    except (OSError, ValueError):
        return None


def input_identities(inputs: Sequence[str | os.PathLike[str]]) -> dict[tuple[int, int], str]:
    """The regular files among the inputs, by (st_dev, st_ino); '-' (stdin) is what fd 0 is."""
    found: dict[tuple[int, int], str] = {}
    for name in inputs or ["-"]:
        name = os.fspath(name)
        if name == "-":
            ident, label = _fd_identity(0), "stdin"
        else:
            try:
                ident, label = _identity(os.stat(name)), name
            except OSError:
                continue
        if ident is not None:
            found.setdefault(ident, label)
    return found


# The files SQLite keeps beside a cache file: all three hold (or will hold) the cache.
CACHE_SUFFIXES = ("", "-wal", "-shm")


def _protected(
    inputs: Sequence[str | os.PathLike[str]], cache: str | os.PathLike[str] | None
) -> dict[tuple[int, int], tuple[str, str]]:
    """Files no output may be: the inputs, and the result cache with its -wal/-shm, by (st_dev, st_ino).

    Values: (how to name the file, what it is) for the refusal message.
    """
    found = {
        ident: ("stdin, an input" if name == "stdin" else f"the input {name}", "an input")
        for ident, name in input_identities(inputs).items()
    }
    if cache is not None:
        for suffix in CACHE_SUFFIXES:
            try:
                ident = _identity(os.stat(f"{os.fspath(cache)}{suffix}"))
            except OSError:
                continue
            if ident is not None:
                found.setdefault(ident, (f"the result cache {os.fspath(cache)}{suffix}", "the result cache"))
    return found


def _clobbers(
    option: str, target: str, ident: tuple[int, int] | None, protected: dict[tuple[int, int], tuple[str, str]]
) -> OutputError | None:
    if ident is None or ident not in protected:
        return None
    what, kind = protected[ident]
    if option == "stdout":
        return OutputError(
            f"stdout is the same file as {what}: refusing to overwrite {kind} (redirect the output to another file)"
        )
    return OutputError(
        f"{option} {target} is the same file as {what}: refusing to overwrite {kind} (choose another {option} file)"
    )


def _names_cache(option: str, path: str, cache: str | os.PathLike[str] | None) -> OutputError | None:
    """An output path that names the cache (or its -wal/-shm) before SQLite created it."""
    if cache is None:
        return None
    real = os.path.realpath(path)
    for suffix in CACHE_SUFFIXES:
        if real == os.path.realpath(f"{os.fspath(cache)}{suffix}"):
            return OutputError(
                f"{option} {path} is the result cache file {os.fspath(cache)}{suffix}: refusing to "
                f"overwrite the result cache (choose another {option} file)"
            )
    return None


def check_stdout(inputs: Sequence[str | os.PathLike[str]], cache: str | os.PathLike[str] | None = None) -> None:
    """Refuse a stdout that is one of the input files (`score f.txt >> f.txt`) or the result cache
    (`score f.txt > "$SENTICTL_CACHE"`); pipes and ttys are fine."""
    err = _clobbers("stdout", "", _fd_identity(1), _protected(inputs, cache))
    if err:
        raise err


def check_output_path(
    path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    option: str = "--errors",
    cache: str | os.PathLike[str] | None = None,
) -> None:
    """Before any work: refuse an output path that is an input or the result cache, or that cannot be created.

    Only looks (stat, access); :func:`open_output` does the authoritative check on what it opens.
    """
    path = os.fspath(path)
    err = _names_cache(option, path, cache)
    if err:
        raise err
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        try:
            pst = os.stat(parent)
        except OSError as exc:
            raise OutputError(f"cannot write {option} to {path}: {_reason(exc)}") from None
        if not stat.S_ISDIR(pst.st_mode):
            raise OutputError(f"cannot write {option} to {path}: Not a directory") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {option} to {path}: Permission denied") from None
        return
    except OSError as exc:
        raise OutputError(f"cannot write {option} to {path}: {_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {option} to {path}: Is a directory")
    err = _clobbers(option, path, _identity(st), _protected(inputs, cache))
    if err:
        raise err
    if _identity(st) is not None and _identity(st) == _fd_identity(1):
        raise OutputError(f"{option} {path} is the same file as stdout: choose another {option} file")
    if not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {option} to {path}: Permission denied")


def open_output(
    path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    option: str = "--errors",
    cache: str | os.PathLike[str] | None = None,
) -> IO[bytes]:
    """Open ``path`` for writing; it is truncated only after checking it is no input, cache file (nor stdout).

    Opening with "wb" would empty an input before any check could run; here the file is opened
    without O_TRUNC, compared by (st_dev, st_ino) with every input and cache file, and only then truncated.
    """
    path = os.fspath(path)
    err = _names_cache(option, path, cache)
    if err:
        raise err
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"cannot write {option} to {path}: {_reason(exc)}") from None
    try:
        ident = _fd_identity(fd)
        err = _clobbers(option, path, ident, _protected(inputs, cache))
        if err:
            raise err
        if ident is not None and ident == _fd_identity(1):
            raise OutputError(f"{option} {path} is the same file as stdout: choose another {option} file")
        if ident is not None:
            os.ftruncate(fd, 0)
        return open(fd, "wb")
    except OSError as exc:
        os.close(fd)
        raise OutputError(f"cannot write {option} to {path}: {_reason(exc)}") from None
    except BaseException:
        os.close(fd)
        raise


def close_output(stream: IO[bytes], what: str) -> None:
    """Close an output file, reporting a failed final flush (NFS, full disk) as one line."""
    try:
        stream.close()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {_reason(exc)}") from None


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's own flush at exit cannot fail a second time
    (and print "Exception ignored ... OSError" after our one-line message)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
        finally:
            os.close(devnull)
    except OSError:
        pass


def output_failed(what: str, exc: OSError, stream: Any = None) -> OutputError:
    """The one-line error for a failed write; when the failed stream is stdout, silence it."""
    if stream is None or _fileno(stream) == 1:
        silence_stdout()
    return OutputError(f"cannot write {what}: {_reason(exc)}")


def flush_stdout(what: str = "results") -> None:
    """Flush stdout inside the command, so a full disk is one line here, not a failure at exit."""
    if sys.stdout is None:  # started with fd 1 closed
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except ValueError:  # stdout already closed
        pass
    except OSError as exc:
        raise output_failed(f"{what} to stdout", exc) from None


@contextmanager
def writing_stdout(what: str = "results") -> Iterator[None]:
    """Around code that prints to stdout (click.echo): a full disk or I/O error → one OutputError line."""
    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise output_failed(f"{what} to stdout", exc) from None
