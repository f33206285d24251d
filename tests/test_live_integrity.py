"""Only verified bytes run, for as long as a process runs (issue 18, items 1-3).

A running server reads its model files once, checks those bytes and builds its session from them
(weights from a private copy nobody else can open), so a `cp` over its weights file or truncating
it changes nothing it serves and cannot kill it. Stamps name the file's ctime, which user space
cannot set back. A folder optimum wrote is identified by every file its graph names as external
data, whatever that file is called. An export writes read-only files into a new folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import orjson
import pytest

from conftest import run_sentictl, sentictl_env
from sentictl.engine import integrity
from sentictl.engine import model as engine
from test_serve import Server

TEXTS = ["Revenue grew strongly", "Profit fell sharply after the merger.", "Shares surged on record earnings."]
DATA = "model_int8.onnx.data"


def _export(tmp_path_factory, seed: int) -> Path:
    from sentictl.export import run_export
    from support.checkpoints import build_checkpoint

    ckpt = build_checkpoint(tmp_path_factory.mktemp(f"ckpt{seed}") / "tiny", seed=seed)
    out = tmp_path_factory.mktemp(f"export{seed}") / "tiny"
    run_export(str(ckpt), out=out, variants="int8", quiet=True)
    return out


@pytest.fixture(scope="module")
def export_a(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, 0)


@pytest.fixture(scope="module")
def export_b(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, 1)


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for path in dest.iterdir():  # writable copies: the tests edit them the way users do
        path.chmod(0o644)
    return dest


def _score(model_dir: Path, *args: str, cache: Path | None = None) -> tuple[int, list[dict], str]:
    cache_args = ["--cache", str(cache)] if cache else ["--no-cache"]
    run = run_sentictl(
        "score", "--model-dir", str(model_dir), "--variant", "int8", *cache_args, *args, input="\n".join(TEXTS) + "\n"
    )
    lines = [orjson.loads(line) for line in run.stdout.splitlines() if line.strip()]
    return run.returncode, lines, run.stderr.decode(errors="replace")


# ----------------------------------------------------------------------------- 1: the served bytes
def _predict(server: Server) -> list:
    response = server.client.post("/predict", json={"inputs": [[t] for t in TEXTS]})
    assert response.status_code == 200, response.text
    return response.json()


def test_cp_over_and_truncating_the_served_weights_changes_nothing(export_a, export_b, tmp_path):
    served = _copy(export_a, tmp_path / "served")
    assert (export_b / DATA).stat().st_size == (served / DATA).stat().st_size  # same shapes: a same-size swap
    server = Server(["--model-dir", str(served), "--variant", "int8", "--no-cache"]).wait_healthy()
    try:
        genuine = _predict(server)
        fingerprint = server.client.get("/info").json()["fingerprint"]
        # Nothing of the model folder stays open or mapped: the weights come from a private, deleted copy.
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert str(served) not in maps
        assert not any(
            str(served) in os.readlink(f"/proc/{server.proc.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{server.proc.pid}/fd")
            if os.path.exists(f"/proc/{server.proc.pid}/fd/{fd}")
        )

        shutil.copyfile(export_b / DATA, served / DATA)  # what `cp other/model_int8.onnx.data served/` does
        assert _predict(server) == genuine
        assert server.client.get("/info").json()["fingerprint"] == fingerprint

        with open(served / DATA, "wb"):  # `: > file`: truncated to 0 bytes
            pass
        assert _predict(server) == genuine  # no SIGBUS: nothing reads the folder's file
        assert server.client.get("/info").json()["fingerprint"] == fingerprint
        assert server.client.get("/health").status_code == 200
    finally:
        code, err = server.stop()
    assert code == 0, err

    # And the folder as it is now is refused by a new process (its stamp named the old ctime).
    code, lines, err = _score(served)
    assert code == 1 and lines == [] and "Traceback" not in err, err


# ----------------------------------------------------------------------------- 2: stamps and ctime
def _edit_keeping_mtime(path: Path, source: Path) -> None:
    """Rewrite a file in place (same inode, same size) with another file's bytes, then set its mtime back."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.write(source.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_an_in_place_edit_with_the_mtime_set_back_is_refused(export_a, export_b, tmp_path):
    folder = _copy(export_a, tmp_path / "edited")
    code, lines, err = _score(folder)
    assert code == 0 and len(lines) == len(TEXTS), err
    assert integrity.read_stamp(folder / DATA) is not None  # stamped by that run
    _edit_keeping_mtime(folder / DATA, export_b / DATA)
    assert integrity.read_stamp(folder / DATA) is None  # the ctime moved: the stamp no longer applies
    code, lines, err = _score(folder)
    assert code == 1 and lines == [], err
    assert "does not match the sha256" in err and "Traceback" not in err, err


def test_stamps_record_the_ctime(export_a, tmp_path):
    folder = _copy(export_a, tmp_path / "stamped")
    engine.Model(folder, provider="cpu", variant="int8")
    st = (folder / DATA).stat()
    record = orjson.loads((integrity.stamp_dir() / f"{st.st_dev}-{st.st_ino}.json").read_bytes())
    assert record["ctime_ns"] == st.st_ctime_ns and record["mtime_ns"] == st.st_mtime_ns
    # A stamp without the ctime (written by an older version) is not trusted: hashed once more.
    del record["ctime_ns"]
    (integrity.stamp_dir() / f"{st.st_dev}-{st.st_ino}.json").write_bytes(orjson.dumps(record))
    assert integrity.read_stamp(folder / DATA) is None


# ----------------------------------------------------------------------------- 3: foreign external data
def _optimum_folder(export: Path, dest: Path, location: str = "weights.bin") -> Path:
    """An optimum-style folder (no manifest.json) whose graph keeps its weights in ``location``."""
    onnx = pytest.importorskip("onnx")
    dest.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (export / name).is_file():
            shutil.copyfile(export / name, dest / name)
    model = onnx.load(str(export / "model_int8.onnx"))  # the weights read in from model_int8.onnx.data
    onnx.save_model(
        model,
        str(dest / "model_quantized.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    return dest


def test_a_foreign_graph_reads_weights_bin_and_every_byte_of_it_counts(export_a, export_b, tmp_path):
    first = _optimum_folder(export_a, tmp_path / "release-1")
    second = _optimum_folder(export_b, tmp_path / "release-2")
    assert not list(first.glob("*.data")) and not list(first.glob("*_data"))
    assert integrity.external_locations((first / "model_quantized.onnx").read_bytes()) == ["weights.bin"]
    assert (first / "weights.bin").stat().st_size == (second / "weights.bin").stat().st_size

    cache = tmp_path / "cache.sqlite"
    code, genuine, err = _score(first, cache=cache)
    assert code == 0 and len(genuine) == len(TEXTS), err
    fp1 = engine.Model(first, provider="cpu", variant="int8").fingerprint

    # weights.bin replaced by the next release's (same size, mtime set back): a new model.
    _edit_keeping_mtime(first / "weights.bin", second / "weights.bin")
    fp2 = engine.Model(first, provider="cpu", variant="int8").fingerprint
    assert fp2 != fp1
    code, after, err = _score(first, cache=cache)
    assert code == 0, err
    assert not any(r["cache_hit"] for r in after)  # never the old release's results from the cache
    assert [r["scores"] for r in after] != [r["scores"] for r in genuine]


def test_a_new_release_extracted_with_fixed_mtimes_is_a_new_model(export_a, export_b, tmp_path):
    """tar --mtime=...: a new file (maybe on a reused inode) with the old size and mtime."""
    folder = _optimum_folder(export_a, tmp_path / "release")
    second = _optimum_folder(export_b, tmp_path / "next")
    old = engine.Model(folder, provider="cpu", variant="int8").fingerprint
    st = (folder / "weights.bin").stat()
    (folder / "weights.bin").unlink()
    shutil.copyfile(second / "weights.bin", folder / "weights.bin")
    os.utime(folder / "weights.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert engine.Model(folder, provider="cpu", variant="int8").fingerprint != old


def test_a_foreign_folder_with_the_usual_data_name_keeps_its_fingerprint(export_a, tmp_path):
    """<graph>.data was always hashed: such folders keep the fingerprint (and cache entries) they had."""
    folder = _optimum_folder(export_a, tmp_path / "usual", location="model_quantized.onnx.data")
    m = engine.Model(folder, provider="cpu", variant="int8")
    assert "external_data" not in m.manifest["foreign"]
    assert m.manifest["variants"]["int8"]["data"]["sha256"] == integrity.sha256_file(
        folder / "model_quantized.onnx.data"
    )


def test_a_graph_pointing_outside_its_folder_is_refused(export_a, tmp_path):
    onnx = pytest.importorskip("onnx")
    folder = _optimum_folder(export_a, tmp_path / "escape")
    model = onnx.load(str(folder / "model_quantized.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.bin"
    onnx.save_model(model, str(folder / "model_quantized.onnx"))
    shutil.copyfile(folder / "weights.bin", tmp_path / "elsewhere.bin")
    code, lines, err = _score(folder)
    assert code == 1 and lines == [] and "outside its folder" in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- export: read-only, new inodes
def test_export_writes_read_only_files_into_a_new_folder(export_a, tmp_path):
    for path in export_a.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path
    # Sealing kept the stamps valid: the first load after an export hashes nothing.
    for name in ("model_int8.onnx", DATA, "tokenizer.json"):
        assert integrity.read_stamp(export_a / name) is not None, name


def test_export_force_into_a_served_folder_leaves_the_server_its_model(export_a, tmp_path):
    from support.checkpoints import build_checkpoint

    served = tmp_path / "served"
    shutil.copytree(export_a, served)
    inodes = {p.name: p.stat().st_ino for p in served.iterdir()}
    server = Server(["--model-dir", str(served), "--variant", "int8", "--no-cache"]).wait_healthy()
    try:
        genuine = _predict(server)
        ckpt = build_checkpoint(tmp_path / "ckpt2", seed=2)
        run = run_sentictl(
            "export", "--model", str(ckpt), "--out", str(served), "--variants", "int8", "--force", timeout=600
        )
        assert run.returncode == 0, run.stderr.decode()
        assert all(p.stat().st_ino != inodes.get(p.name) for p in served.iterdir())
        assert _predict(server) == genuine
    finally:
        code, err = server.stop()
    assert code == 0, err


def test_without_a_writable_folder_the_bytes_stay_in_memory(export_a, tmp_path, monkeypatch):
    """No private folder can be made: the weights are handed to ORT from memory, checked all the same."""
    monkeypatch.setattr(integrity, "private_dir", lambda: None)
    m = engine.Model(export_a, provider="cpu", variant="int8", verify="always")
    reference = engine.Model(export_a, provider="cpu", variant="int8")
    assert m.fingerprint == reference.fingerprint
    assert m.classify(TEXTS) == reference.classify(TEXTS)


def test_no_private_copies_are_left_behind(export_a):
    engine.Model(export_a, provider="cpu", variant="int8")
    loading = integrity.stamp_dir().parent / "loading"
    assert not [p for p in loading.iterdir() if p.name.startswith(f"{os.getpid()}-")]


def test_hot_path_still_never_imports_onnx(export_a):
    code = (
        "import sys; from sentictl.engine.model import Model; "
        f"Model({str(export_a)!r}, provider='cpu', variant='int8'); "
        "print(sorted(m for m in ('onnx', 'torch', 'transformers', 'optimum') if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=sentictl_env(), timeout=120)
    assert out.stdout.decode().strip() == "[]", out.stderr.decode()


def test_a_private_folder_that_cannot_take_the_copy_falls_back_to_memory(export_a, tmp_path, monkeypatch):
    """Disk full (or read-only) where the private copy goes: loaded from memory, checked all the same."""
    real = integrity.copy_verified

    def full(source, dest, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(integrity, "copy_verified", full)
    m = engine.Model(export_a, provider="cpu", variant="int8", verify="always")
    monkeypatch.setattr(integrity, "copy_verified", real)
    reference = engine.Model(export_a, provider="cpu", variant="int8")
    assert m.fingerprint == reference.fingerprint and m.classify(TEXTS) == reference.classify(TEXTS)
    assert m.weights_from == "memory" and reference.weights_from == "a private copy"
