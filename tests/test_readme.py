"""README.md works as written: its shell blocks run, in order, in a fresh folder, as a new user would.

Every fenced ``bash``/``sh``/``shell``/``console`` block of README.md is run unless the line just
before its fence is ``<!-- readme-test: skip (why) -->`` (set-up, the Hugging Face hub, a broker, a
GPU). The counts of run and skipped blocks are pinned below, so a new block runs by default and
skipping one is a visible change to this file.

The blocks run as one shell session would: in a temporary folder holding a copy of ``examples/``
and a ``.venv`` link to the venv running this test, with that venv's ``bin`` taken *off* PATH, so
a bare ``sentictl`` works only after README's own ``. .venv/bin/activate`` (which then puts it
first). Lines that change the shell (``.``/``source``, ``export``, ``cd``, ``NAME=value``) carry
over to every later command. Each command must exit 0, or N where its comment says ``exits N``,
and print no traceback. A command ending in ``&`` runs in the background (README's ``serve``); the
first ``curl`` waits for it with curl's own retries; ``kill %N`` sends SIGTERM to the Nth one, which
must then exit 0, as README says. Port 8080 is replaced by a free loopback port.

The environment is a stranger's: no ``SENTICTL_*`` variables but ``SENTICTL_CACHE`` (a file in the
temporary folder), ``HF_HUB_OFFLINE=1``, ``HF_HOME`` and ``XDG_CACHE_HOME`` in the temporary
folder (so verified stamps and caches never touch the user's), and no ``models/finbert`` in the
working folder: every runnable block uses the bundled model.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[export,test,bench]' && .venv/bin/python -m pytest"
)

# What README holds today. Change these only together with README, on purpose.
EXPECTED_RUN = 8
EXPECTED_SKIPPED = 7

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh", "shell-session"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->$")
ANY_MARKER = re.compile(r"<!--\s*readme-test")
EXITS = re.compile(r"\bexits?\s+(\d+)\b")
STATEFUL = re.compile(r"^(\.|source|export|cd)\s|^[A-Za-z_][A-Za-z0-9_]*=\S*$")
COMMAND_TIMEOUT = 180


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]
    skip: str | None

    def commands(self) -> list[tuple[int, str]]:
        """(README line, command) for each command: continuations joined, comments and output left out."""
        out: list[tuple[int, str]] = []
        pending: tuple[int, str] | None = None
        for i, raw in enumerate(self.lines, start=self.line + 1):
            text = raw.rstrip()
            if self.lang in ("console", "shell-session"):
                if pending is None:
                    if not text.startswith("$ "):
                        continue  # output
                    text = text[2:]
            if pending is not None:
                start, acc = pending
                text = acc + " " + text.strip()
                i = start
                pending = None
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                pending = (i, stripped[:-1].rstrip())
                continue
            out.append((i, stripped))
        assert pending is None, f"README.md:{pending[0]}: a command ends in a line continuation"
        return out


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of a shell language, with its skip marker (the line just before the fence)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        assert j < len(lines), f"README.md:{start + 1}: a code fence is never closed"
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        before = lines[k].strip() if k >= 0 else ""
        skip = SKIP.match(before)
        if ANY_MARKER.search(before) and not skip:
            pytest.fail(
                f"README.md:{k + 1}: a readme-test marker this test does not understand: {before!r} "
                "(write <!-- readme-test: skip (why) -->)"
            )
        if lang in SHELL_LANGS:
            blocks.append(Block(start + 1, lang, lines[start + 1 : j], skip.group("why").strip() if skip else None))
        elif skip:
            pytest.fail(f"README.md:{k + 1}: a skip marker before a {lang or 'plain'} block, which is never run anyway")
        i = j + 1
    return blocks


def expected_status(command: str) -> int:
    """The exit status README's comment on the command announces (``# exits 3``), else 0."""
    comment = re.search(r"\s#\s(.*)$", command)
    m = EXITS.search(comment.group(1)) if comment else None
    return int(m.group(1)) if m else 0


def strip_comment(command: str) -> str:
    return re.sub(r"\s+#\s.*$", "", command).strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    """One shell session, as a reader who types README's blocks in order has."""

    cwd: Path
    env: dict[str, str]
    port: int
    prelude: list[str] = field(default_factory=list)
    jobs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    ran: int = 0

    def script(self, command: str) -> str:
        return "\n".join([*self.prelude, command])

    def run(self, where: str, command: str) -> None:
        command = command.replace("8080", str(self.port))
        bare = strip_comment(command)
        kill = re.fullmatch(r"kill\s+%(\d+)", bare)
        if kill:
            self.stop(where, int(kill.group(1)))
            return
        if bare.endswith("&") and not bare.endswith("&&"):
            log = open(self.cwd / f".job{len(self.jobs) + 1}.log", "wb")
            proc = subprocess.Popen(
                ["bash", "-c", self.script("exec " + bare[:-1].strip())],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.jobs.append((where, proc))
            self.ran += 1
            return
        want = expected_status(command)
        try:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", self.script(command)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}: `{command}` did not finish within {COMMAND_TIMEOUT} s")
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        assert done.returncode == want, (
            f"{where}: `{command}` exited {done.returncode}, README implies {want}\n"
            f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}{self.job_logs()}"
        )
        assert "Traceback (most recent call last)" not in err, (
            f"{where}: `{command}` printed a traceback:\n{err[-3000:]}"
        )
        self.ran += 1
        if STATEFUL.match(bare):
            self.prelude.append(bare)

    def stop(self, where: str, n: int) -> None:
        assert 1 <= n <= len(self.jobs), f"{where}: `kill %{n}` but only {len(self.jobs)} background job(s) started"
        started, proc = self.jobs[n - 1]
        assert proc.poll() is None, (
            f"{where}: the job started at {started} had already ended ({proc.returncode}){self.job_logs()}"
        )
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{where}: the job started at {started} did not stop within 30 s of SIGTERM{self.job_logs()}")
        assert status == 0, (
            f"{where}: the job started at {started} exited {status} after SIGTERM, README says 0{self.job_logs()}"
        )
        self.ran += 1

    def job_logs(self) -> str:
        logs = sorted(self.cwd.glob(".job*.log"))
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

    def end_block(self, where: str) -> None:
        """A block must stop what it started: a server left running would outlive the reader's session."""
        left = [(s, p) for s, p in self.jobs if p.poll() is None]
        for _, p in left:
            p.kill()
            p.wait()
        self.jobs.clear()
        assert not left, (
            f"{where}: background job(s) started at {[s for s, _ in left]} still running at the block's end"
        )


def venv_dir() -> Path:
    prefix = Path(sys.prefix)
    if sys.prefix == sys.base_prefix or not (prefix / "bin" / "activate").exists():
        pytest.skip(
            "README's blocks activate a venv: run this test with the project's venv (.venv/bin/python -m pytest)"
        )
    return prefix


def stranger_env(tmp: Path, venv: Path) -> dict[str, str]:
    venv_bins = {str(venv / "bin"), str(Path(sys.executable).parent)}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENTICTL_", "HF_", "PIP_", "PYTHON")) and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")
    }
    env["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and p not in venv_bins
    )
    env.update(
        {
            "SENTICTL_CACHE": str(tmp / "cache" / "results.sqlite"),
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp / "hf"),
            "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
            "LC_ALL": env.get("LC_ALL", "C.UTF-8"),
        }
    )
    return env


def test_readme_blocks_run_as_written(tmp_path: Path) -> None:
    """Every runnable shell block of README.md runs, in order, with the exit statuses README implies."""
    if shutil.which("curl") is None:
        pytest.fail("README's serve example needs curl on PATH")
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    run = [b for b in blocks if b.skip is None]
    skipped = [b for b in blocks if b.skip is not None]
    summary = "\n".join(f"  README.md:{b.line}: {'skip (' + b.skip + ')' if b.skip else 'run'}" for b in blocks)
    assert (len(run), len(skipped)) == (EXPECTED_RUN, EXPECTED_SKIPPED), (
        f"README has {len(run)} runnable and {len(skipped)} skipped shell blocks, this test expects "
        f"{EXPECTED_RUN} and {EXPECTED_SKIPPED}: a new block runs by default; update the counts when a "
        f"block is added or a skip is justified\n{summary}"
    )

    venv = venv_dir()
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    (work / ".venv").symlink_to(venv, target_is_directory=True)
    assert not (work / "models" / "finbert").exists()
    env = stranger_env(tmp_path, venv)

    session = Session(work, env, free_port())
    for block in run:
        commands = block.commands()
        assert commands, f"README.md:{block.line}: a runnable block with no command (mark it, or drop it)"
        for line, command in commands:
            session.run(f"README.md:{line}", command)
        session.end_block(f"README.md:{block.line}")
    assert session.ran >= EXPECTED_RUN
    # Nothing README ran may have reached outside the temporary folder's cache.
    assert (tmp_path / "cache" / "results.sqlite").exists(), "README's commands never used the cache set for them"


def test_readme_quick_start_activates_the_venv() -> None:
    """A fresh shell has no `sentictl`: README says to activate the venv before the first bare command."""
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.skip is None]
    first = [c for b in blocks for _, c in b.commands()]
    bare = next(i for i, c in enumerate(first) if re.match(r"(.*\|\s*)?sentictl\b", strip_comment(c)))
    assert any(strip_comment(c) in (". .venv/bin/activate", "source .venv/bin/activate") for c in first[:bare]), (
        "README runs a bare `sentictl` before telling the reader to activate the venv"
    )


def test_readme_test_command_is_what_ci_runs() -> None:
    """The test command README gives is the one .ci/run runs, verbatim."""
    text = README.read_text(encoding="utf-8")
    assert TEST_COMMAND in text
    ci = ROOT / ".ci" / "run"
    if ci.exists():
        assert TEST_COMMAND in ci.read_text(encoding="utf-8")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to hyphens)."""
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_readme_links_and_headings() -> None:
    """Every local link (and its #anchor) in README and docs/ resolves, no heading carries a stray
    HTML comment, README stays short."""
    text = README.read_text(encoding="utf-8")
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path = (doc.parent / target) if target else doc
            where = f"{doc.relative_to(ROOT)} links to {target}{'#' + anchor if anchor else ''}"
            assert path.exists(), f"{where}, which does not exist"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{where}: no such heading"
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            assert "<!--" not in line and "-->" not in line, f"README.md:{n}: an HTML comment leaked into a heading"
    n_lines = len(text.splitlines())
    assert n_lines < 400, f"README has {n_lines} lines: keep it to the first hour, move reference to docs/"
