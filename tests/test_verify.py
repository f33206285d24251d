"""Only verified bytes run under a model's fingerprint (issue 9, item 4).

A model file edited on disk (its sha256 no longer the manifest's) is refused by every command;
with --no-verify it runs under an "unverified" fingerprint that never shares cache entries with
the genuine model. Verified stamps in the user cache dir (a temp dir here, see conftest) spare
score's cold start from hashing a file that was already hashed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import orjson
import pytest

from conftest import free_port, run_sentictl, sentictl_env
from sentictl import config
from sentictl.engine import integrity
from sentictl.engine import model as engine
from sentictl.errors import IntegrityError, SentictlError

TEXTS = "Profit fell sharply after the merger.\nShares surged on record earnings.\n"


def _tamper(path, offset: int, length: int = 2048) -> None:
    """Overwrite ``length`` bytes at ``offset`` in place (same size) with valid float32 values."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.full(length // 4, 3.0, dtype=np.float32).tobytes())


def _weights_location(path, name: str = "position_embeddings"):
    """The file and offset where the raw bytes of an fp32 initializer start (every text uses positions 0..).

    An export keeps the weights in ``<graph>.data`` (ONNX external data): the tensor's own
    offset there. A single-file model: where its bytes are found in the graph file.
    """
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    tensor = next(t for t in graph.initializer if name in t.name)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        return path.parent / info["location"], int(info["offset"])
    offset = path.read_bytes().find(tensor.raw_data)
    assert offset > 0
    return path, offset


@pytest.fixture
def tampered(tiny_model_dir, tmp_path):
    """A copy of the tiny model whose int8 weights have 2 KB overwritten (size kept)."""
    dest = tmp_path / "models" / "edited"
    shutil.copytree(tiny_model_dir, dest)
    weights, offset = _weights_location(dest / "model_int8.onnx")
    assert weights.name == "model_int8.onnx.data"  # the default export keeps weights beside the graph
    size = weights.stat().st_size
    assert 0 <= offset < size - 2048
    _tamper(weights, offset)
    assert weights.stat().st_size == size
    manifest = engine.read_manifest(dest)
    assert integrity.sha256_file(weights) != manifest["variants"]["int8"]["data"]["sha256"]
    assert integrity.sha256_file(dest / "model_int8.onnx") == manifest["variants"]["int8"]["sha256"]
    return dest


def _assert_refused(
    run: subprocess.CompletedProcess | tuple[int, bytes, bytes], model_dir, file: str = "model_int8.onnx.data"
) -> str:
    rc, out, err = (run.returncode, run.stdout, run.stderr) if hasattr(run, "returncode") else run
    text = err.decode()
    assert rc == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert f"{model_dir / file} does not match the sha256 in manifest.json" in text, text[-3000:]
    assert "sentictl export" in text and "--no-verify" in text
    return text


def _results(run: subprocess.CompletedProcess) -> list[dict]:
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    return [orjson.loads(line) for line in run.stdout.splitlines()]


# ----------------------------------------------------------------------------- refusal
def test_score_refuses_an_edited_file_in_one_line(tampered):
    run = run_sentictl("score", "--variant", "int8", "--model-dir", str(tampered), "--no-cache", input=TEXTS)
    err = _assert_refused(run, tampered)
    assert run.stdout == b""
    assert len(err.strip().splitlines()) == 1, err


def test_an_edited_graph_file_is_refused_too(tiny_model_dir, tmp_path):
    dest = tmp_path / "models" / "graph-edited"
    shutil.copytree(tiny_model_dir, dest)
    with open(dest / "model_int8.onnx", "ab") as fh:
        fh.write(b"\0")  # still a valid protobuf, other bytes
    _assert_refused(
        run_sentictl("score", "--variant", "int8", "--model-dir", str(dest), "--no-cache", input=TEXTS),
        dest,
        file="model_int8.onnx",
    )


def test_a_missing_weights_file_is_one_line(tiny_model_dir, tmp_path):
    dest = tmp_path / "models" / "no-data"
    shutil.copytree(tiny_model_dir, dest)
    (dest / "model_int8.onnx.data").unlink()
    run = run_sentictl("score", "--variant", "int8", "--model-dir", str(dest), "--no-cache", "--no-verify", input=TEXTS)
    err = run.stderr.decode()
    assert run.returncode == 1 and "Traceback" not in err, err
    assert "model_int8.onnx.data is missing" in err and "copy both files together" in err
    info = run_sentictl("info", "--model-dir", str(dest), "--variant", "fp32", "--verify")
    assert info.returncode == 4
    assert "int8 weights: model_int8.onnx.data is missing" in orjson.loads(info.stdout)["problems"]


def test_no_verify_runs_the_edited_file(tampered, tiny_model_dir):
    genuine = _results(
        run_sentictl("score", "--variant", "int8", "--model-dir", str(tiny_model_dir), "--no-cache", "-q", input=TEXTS)
    )
    edited = _results(
        run_sentictl(
            "score", "--variant", "int8", "--model-dir", str(tampered), "--no-cache", "--no-verify", "-q", input=TEXTS
        )
    )
    assert [r["scores"] for r in edited] != [r["scores"] for r in genuine]  # the edit changes the weights used
    # The environment variable does the same.
    env = sentictl_env(SENTICTL_NO_VERIFY="1")
    assert (
        len(
            _results(
                run_sentictl(
                    "score", "--variant", "int8", "--model-dir", str(tampered), "--no-cache", input=TEXTS, env=env
                )
            )
        )
        == 2
    )


def test_serve_exits_1_by_itself(tampered, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentictl",
            "serve",
            "--variant",
            "int8",
            "--model-dir",
            str(tampered),
            "--port",
            str(port),
            "--cache",
            str(tmp_path / "cache.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sentictl_env(),
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_refused((proc.returncode, out, err), tampered)


def test_bridge_exits_1_before_connecting(tampered, tmp_path):
    # A listener on the bootstrap port: the bridge must never connect to it.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        run = run_sentictl(
            "bridge",
            "--variant",
            "int8",
            "--model-dir",
            str(tampered),
            "--in",
            "a",
            "--out",
            "b",
            "--bootstrap",
            f"127.0.0.1:{port}",
            "--connect-timeout",
            "20",
            "--cache",
            str(tmp_path / "cache.sqlite"),
            timeout=90,
        )
        _assert_refused(run, tampered)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_info_verify_reports_the_problem(tampered):
    run = run_sentictl("info", "--model-dir", str(tampered), "--verify")
    assert run.returncode == 4  # a check that was asked for failed
    info = orjson.loads(run.stdout)
    assert info["problems"] == ["int8 weights: model_int8.onnx.data does not match its sha256"]
    assert info["verified"] is False
    assert info["verify"] == "off"  # described, but only as --no-verify would run it
    _assert_refused(run_sentictl("info", "--model-dir", str(tampered)), tampered)


def test_always_mode_catches_an_edit_that_kept_the_mtime(tiny_model_dir, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(tiny_model_dir, dest)
    engine.Model(dest, provider="cpu", variant="int8")  # hashed and stamped
    weights, offset = _weights_location(dest / "model_int8.onnx")
    st = weights.stat()
    _tamper(weights, offset)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # the stamp still matches...
    with pytest.raises(IntegrityError, match="model_int8.onnx.data does not match"):
        engine.Model(dest, provider="cpu", variant="int8", verify="always")  # ...serve/bridge hash anyway


def test_unknown_verify_mode():
    with pytest.raises(SentictlError, match="verify mode"):
        engine.Model(config.bundled_model_dir(), verify="sometimes")


# ----------------------------------------------------------------------------- the cache
def test_unverified_results_never_share_the_genuine_fingerprint(tiny_model_dir, tampered, tmp_path):
    cache = str(tmp_path / "shared.sqlite")
    first = _results(
        run_sentictl(
            "score", "--variant", "int8", "--model-dir", str(tiny_model_dir), "--cache", cache, "-q", input=TEXTS
        )
    )
    assert [r["cache_hit"] for r in first] == [False, False]

    edited = _results(
        run_sentictl(
            "score",
            "--variant",
            "int8",
            "--model-dir",
            str(tampered),
            "--cache",
            cache,
            "--no-verify",
            "-q",
            input=TEXTS,
        )
    )
    assert [r["cache_hit"] for r in edited] == [False, False]
    assert [r["scores"] for r in edited] != [r["scores"] for r in first]
    # Run again: the edited file's own entries are hits, the genuine ones never were.
    again = _results(
        run_sentictl(
            "score",
            "--variant",
            "int8",
            "--model-dir",
            str(tampered),
            "--cache",
            cache,
            "--no-verify",
            "-q",
            input=TEXTS,
        )
    )
    assert [r["cache_hit"] for r in again] == [True, True]
    assert [r["scores"] for r in again] == [r["scores"] for r in edited]

    genuine = _results(
        run_sentictl(
            "score", "--variant", "int8", "--model-dir", str(tiny_model_dir), "--cache", cache, "-q", input=TEXTS
        )
    )
    assert [r["cache_hit"] for r in genuine] == [True, True]
    assert [r["scores"] for r in genuine] == [r["scores"] for r in first]

    genuine_fp = orjson.loads(run_sentictl("info", "--model-dir", str(tiny_model_dir), "--variant", "int8").stdout)[
        "fingerprint"
    ]
    info = run_sentictl("info", "--model-dir", str(tampered), "--variant", "int8", "--no-verify")
    assert info.returncode == 0, info.stderr
    unverified = orjson.loads(info.stdout)
    assert unverified["verify"] == "off" and unverified["fingerprint"] != genuine_fp
    assert "unverified" in run_sentictl("score", "--help").stdout.decode()


def test_no_verify_on_an_untouched_copy_still_gets_its_own_namespace(tiny_model_dir):
    genuine = engine.Model(tiny_model_dir, provider="cpu", variant="int8")
    unverified = engine.Model(tiny_model_dir, provider="cpu", variant="int8", verify="off")
    assert genuine.fingerprint == engine.fingerprint(genuine.manifest, "int8")
    assert unverified.fingerprint != genuine.fingerprint
    assert unverified.cache_namespace != genuine.cache_namespace


# ----------------------------------------------------------------------------- stamps
def _count_hashes(monkeypatch) -> list[str]:
    hashed: list[str] = []
    # Every hash of a file's bytes (streamed, of bytes read into memory, or of a private copy) passes here.
    monkeypatch.setattr(integrity, "_note_hash", lambda path: hashed.append(os.path.basename(path)))
    return hashed


def test_export_stamps_its_files_and_rename_keeps_them(tiny_model_dir):
    manifest = engine.read_manifest(tiny_model_dir)
    shipped = [v for v in manifest["variants"].values() if v.get("shipped", True)]
    assert "data" in manifest["variants"]["int8"] and "data" not in manifest["variants"].get("coreml", {})
    entries = [manifest["tokenizer"], *shipped, *(v["data"] for v in shipped if "data" in v)]
    for entry in entries:
        path = tiny_model_dir / entry["file"]
        st = path.stat()
        assert (integrity.stamp_dir() / f"{st.st_dev}-{st.st_ino}.json").is_file(), entry["file"]
        assert integrity.read_stamp(path) == entry["sha256"], entry["file"]
    assert str(integrity.stamp_dir()).startswith(os.environ["XDG_CACHE_HOME"])  # never the real cache dir
    assert not (tiny_model_dir / "verified").exists() and not list(tiny_model_dir.glob("*-*.json"))


def test_stamp_lifecycle(tiny_model_dir, tmp_path, monkeypatch):
    # A copy has new inodes: no stamp applies, so the first load hashes, then stamps.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    onnx_file = copy / "model_int8.onnx"
    expected = engine.read_manifest(copy)["variants"]["int8"]["sha256"]
    assert integrity.read_stamp(onnx_file) is None
    hashed = _count_hashes(monkeypatch)
    engine.Model(copy, provider="cpu", variant="int8")
    assert sorted(hashed) == ["model_int8.onnx", "model_int8.onnx.data", "tokenizer.json"]
    st = onnx_file.stat()
    assert (integrity.stamp_dir() / f"{st.st_dev}-{st.st_ino}.json").is_file()
    assert integrity.read_stamp(onnx_file) == expected

    # Trusted from now on: nothing is hashed.
    hashed.clear()
    engine.Model(copy, provider="cpu", variant="int8")
    assert hashed == []
    # ...except by "always" (serve, bridge).
    engine.Model(copy, provider="cpu", variant="int8", verify="always")
    assert sorted(hashed) == ["model_int8.onnx", "model_int8.onnx.data", "tokenizer.json"]

    # A new mtime voids the stamp: hashed again (same bytes, so fine) and stamped again.
    os.utime(onnx_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert integrity.read_stamp(onnx_file) is None
    hashed.clear()
    engine.Model(copy, provider="cpu", variant="int8")
    assert hashed == ["model_int8.onnx"]
    assert integrity.read_stamp(onnx_file) == expected


def test_a_stamp_of_other_bytes_is_not_trusted(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    onnx_file = copy / "model_int8.onnx"
    # A valid stamp for this very file, but recording another sha256 (e.g. an older manifest).
    assert integrity.write_stamp(onnx_file, "0" * 64)
    engine.Model(copy, provider="cpu", variant="int8")  # hashes: the stamp is not the manifest's
    assert integrity.read_stamp(onnx_file) == engine.read_manifest(copy)["variants"]["int8"]["sha256"]


def test_score_stamps_in_a_subprocess_and_survives_an_unwritable_cache_dir(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    cache_home = tmp_path / "xdg"
    env = sentictl_env(XDG_CACHE_HOME=str(cache_home))
    assert (
        len(
            _results(
                run_sentictl("score", "--variant", "int8", "--model-dir", str(copy), "--no-cache", input=TEXTS, env=env)
            )
        )
        == 2
    )
    st = (copy / "model_int8.onnx").stat()
    assert (cache_home / "sentictl" / "verified" / f"{st.st_dev}-{st.st_ino}.json").is_file()
    # A cache "directory" that is a file: no stamp can be written, and nothing complains.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    env = sentictl_env(XDG_CACHE_HOME=str(blocked))
    run = run_sentictl("score", "--variant", "int8", "--model-dir", str(copy), "--no-cache", "-q", input=TEXTS, env=env)
    assert len(_results(run)) == 2
    # (onnxruntime may warn that it cannot persist its own telemetry id there; sentictl says nothing.)
    assert [line for line in run.stderr.decode().splitlines() if "onnxruntime" not in line] == [], run.stderr


needs_bundle = pytest.mark.skipif(
    not (config.bundled_model_dir() / "manifest.json").is_file(), reason="bundled model not built"
)


@needs_bundle
def test_bundled_model_scores_and_is_stamped_outside_the_package(tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    cache_home = tmp_path / "xdg"
    env = sentictl_env(XDG_CACHE_HOME=str(cache_home))
    run = run_sentictl("score", "--no-cache", input=TEXTS, cwd=cwd, env=env)
    results = _results(run)
    assert [r["model"] for r in results] == ["finsent-mini:int8"] * 2
    bundled = config.bundled_model_dir() / "model_int8.onnx"
    st = bundled.stat()
    stamp = cache_home / "sentictl" / "verified" / f"{st.st_dev}-{st.st_ino}.json"
    assert stamp.is_file()
    assert (
        orjson.loads(stamp.read_bytes())["sha256"] == engine.read_manifest(bundled.parent)["variants"]["int8"]["sha256"]
    )
    # Nothing is written into the package: only what the bundle ships (optimum's files included).
    assert sorted(p.name for p in bundled.parent.iterdir()) == [
        "MODEL_CARD.md",
        "config.json",
        "manifest.json",
        "model_int8.onnx",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
