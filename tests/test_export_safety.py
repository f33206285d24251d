"""`sentictl export` writes only what it creates (issue 9, item 1).

The output folder is resolved first and refused when replacing it could destroy something the
export did not create: the current directory, home, a root, the checkpoint, or a folder holding
any of them; an existing folder is replaced (with --force) only when it is a previous sentictl
model. Refusals happen before anything heavy is loaded, so most of these tests are cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_sentictl, sentictl_env
from sentictl import export
from sentictl.errors import ExportError
from sentictl.export import default_out, resolve_out, run_export


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path below root (relative) → file bytes, or None for a folder."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _scratch(root: Path) -> Path:
    """A user's work folder: root/work holding a file `canary` and a folder `mydata/`."""
    work = root / "work"
    (work / "mydata").mkdir(parents=True)
    (work / "canary").write_text("still here\n")
    (work / "mydata" / "rows.csv").write_text("label,text\npositive,up\n")
    return work


def _assert_refused(run, *needles: str) -> str:
    err = run.stderr.decode()
    assert run.returncode == 1, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, and no progress: refused before loading anything
    assert "[1/" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _fake_previous_model(folder: Path) -> None:
    """What a previous `sentictl export` leaves: a manifest with sentictl's keys and its files."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"old onnx")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": folder.name,
                "labels": {"0": "positive"},
                "variants": {"fp32": {"file": "model.onnx"}},
                "tokenizer": {"file": "tokenizer.json"},
                "created": "2000-01-01T00:00:00+00:00",
            }
        )
    )


# --- the reported case: --model .. from a scratch folder ------------------------------------------


@pytest.mark.parametrize("models_dir", [False, True], ids=["no-models-dir", "models-dir"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_model_dotdot_leaves_the_scratch_folder_alone(tmp_path, models_dir, force):
    work = _scratch(tmp_path)
    if models_dir:
        _fake_previous_model(work / "models" / "other")
    before = _snapshot(tmp_path)
    args = ["export", "--model", "..", "--variants", "fp32"] + (["--force"] if force else [])
    run = run_sentictl(*args, cwd=work, env=sentictl_env(HOME=str(tmp_path / "home")))
    _assert_refused(run)
    assert (work / "canary").read_text() == "still here\n"
    assert (work / "mydata" / "rows.csv").is_file()
    assert _snapshot(tmp_path) == before  # nothing deleted, nothing created


@pytest.mark.parametrize("models_dir", [False, True], ids=["no-models-dir", "models-dir"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_model_dotdot_when_the_parent_is_a_checkpoint(tiny_checkpoint, tmp_path, models_dir, force):
    """The reported case: `..` is a real checkpoint, so the old code built it and then removed
    `models/..` (= the scratch folder). Now the default out, models/<its name>, is refused: it
    would lie inside the checkpoint."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    work = _scratch(ckpt)
    if models_dir:
        _fake_previous_model(work / "models" / "other")
    before = _snapshot(tmp_path)
    args = ["export", "--model", "..", "--variants", "fp32"] + (["--force"] if force else [])
    run = run_sentictl(*args, cwd=work, env=sentictl_env(HOME=str(tmp_path / "home")))
    err = _assert_refused(run, "inside the checkpoint")
    assert "models/.." not in err
    assert _snapshot(tmp_path) == before


def test_default_out_uses_the_resolved_checkpoint_name(tmp_path, monkeypatch):
    project = tmp_path / "Parent" / "project"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    assert default_out("..") == Path("models/parent")
    assert default_out(".") == Path("models/project")
    assert default_out("../project/") == Path("models/project")
    assert default_out("ProsusAI/finbert") == Path("models/finbert")
    for odd in ("ProsusAI/..", "ProsusAI/.", "", "/"):
        assert default_out(odd).name not in ("", ".", "..")
    assert resolve_out("ProsusAI/finbert", None) == project.resolve() / "models" / "finbert"
    assert resolve_out("x", "~/m") == Path.home().resolve() / "m"


# --- dangerous --out values are refused before the export starts -----------------------------------


def _dangerous_outs(tmp_path: Path, ckpt: Path) -> dict[str, tuple[str, str]]:
    return {
        "dot": (".", "current directory"),
        "dotdot": ("..", "current directory"),
        "home": ("~", "home directory"),
        "root": ("/", "root"),
        "checkpoint": (str(ckpt), "checkpoint directory"),
        "inside-checkpoint": (str(ckpt / "sub"), "inside the checkpoint"),
    }


@pytest.mark.parametrize("which", ["dot", "dotdot", "home", "root", "checkpoint", "inside-checkpoint"])
def test_dangerous_out_is_refused_even_with_force(tiny_checkpoint, tmp_path, which):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("keep me\n")
    work = _scratch(home / "proj")  # cwd below home, as usual: `..` is home/proj, not home
    out, why = _dangerous_outs(tmp_path, ckpt)[which]
    before = _snapshot(tmp_path)
    run = run_sentictl(
        "export",
        "--model",
        str(ckpt),
        "--out",
        out,
        "--variants",
        "fp32",
        "--force",
        cwd=work,
        env=sentictl_env(HOME=str(home)),
    )
    _assert_refused(run, "refusing to export to", why)
    assert _snapshot(tmp_path) == before


def test_dangerous_out_is_refused_by_the_api(tiny_checkpoint, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    home = tmp_path / "home"
    work = _scratch(home / "proj")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    for out, why in _dangerous_outs(tmp_path, ckpt).values():
        for force in (False, True):
            with pytest.raises(ExportError, match=why):
                run_export(str(ckpt), out=out, variants="fp32", force=force, quiet=True)
    # A folder that contains the current directory, home or the checkpoint is refused too.
    for out in (tmp_path, work.parent):
        with pytest.raises(ExportError, match="it contains"):
            run_export(str(ckpt), out=out, force=True, quiet=True)
    assert _snapshot(tmp_path) == before


def test_out_below_the_current_directory_is_allowed(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = resolve_out(str(tiny_checkpoint), None)
    assert out == tmp_path.resolve() / "models" / "tiny-finbert"
    export.check_out_location(out, tiny_checkpoint.resolve())  # no error
    export.check_out_location(tmp_path.resolve() / "models" / "x" / "y", None)


# --- an existing folder is replaced only when it is a previous sentictl model -----------------------


def test_force_does_not_replace_a_folder_that_is_not_a_model(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {
        "notes": {"notes.txt": "my notes\n"},
        "other-manifest": {"manifest.json": json.dumps({"name": "not ours"}), "data.bin": "x"},
        "bad-manifest": {"manifest.json": "{ not json", "data.bin": "x"},
    }
    for name, files in cases.items():
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        for fname, text in files.items():
            (folder / fname).write_text(text)
    before = _snapshot(tmp_path)
    for name in cases:
        with pytest.raises(ExportError, match="not a sentictl model folder") as info:
            run_export(str(tiny_checkpoint), out=f"models/{name}", variants="fp32", force=True, quiet=True)
        assert str((tmp_path / "models" / name).resolve()) in str(info.value)
        with pytest.raises(ExportError, match="not empty"):
            run_export(str(tiny_checkpoint), out=f"models/{name}", variants="fp32", quiet=True)
    assert _snapshot(tmp_path) == before
    # The CLI says the same in one line, and the file survives.
    run = run_sentictl("export", "--model", str(tiny_checkpoint), "--out", "models/notes", "--force", cwd=tmp_path)
    _assert_refused(run, "not a sentictl model folder", "has no manifest.json")
    assert (tmp_path / "models" / "notes" / "notes.txt").read_text() == "my notes\n"


def test_out_that_is_a_file_is_refused(tiny_checkpoint, tmp_path):
    target = tmp_path / "model"
    target.write_text("a file\n")
    with pytest.raises(ExportError, match="not a directory"):
        run_export(str(tiny_checkpoint), out=target, force=True, quiet=True)
    assert target.read_text() == "a file\n"


def test_install_replaces_empty_folder_and_previous_model_only(tmp_path):
    models = tmp_path / "models"
    # empty folder: replaced, even without force
    (models / "empty").mkdir(parents=True)
    new = models / ".new1"
    new.mkdir()
    (new / "manifest.json").write_text("{}")
    export.install(new, models / "empty", force=False)
    assert (models / "empty" / "manifest.json").is_file() and not new.exists()
    # previous model: replaced with force, old one gone
    _fake_previous_model(models / "prev")
    new = models / ".new2"
    new.mkdir()
    (new / "model.onnx").write_bytes(b"new")
    export.install(new, models / "prev", force=True)
    assert (models / "prev" / "model.onnx").read_bytes() == b"new"
    assert sorted(p.name for p in models.iterdir()) == ["empty", "prev"]


def test_install_moves_the_old_model_back_when_the_new_one_cannot_go_in(tmp_path, monkeypatch):
    models = tmp_path / "models"
    _fake_previous_model(models / "prev")
    before = _snapshot(models / "prev")
    new = models / ".new"
    new.mkdir()
    real_rename = Path.rename

    def rename(self, target):
        if self == new:
            raise OSError("simulated failure")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        export.install(new, models / "prev", force=True)
    assert _snapshot(models / "prev") == before
    assert sorted(p.name for p in models.iterdir()) == [".new", "prev"]  # no .old left behind


def test_force_replaces_a_previous_export_and_nothing_else(tiny_checkpoint, tmp_path):
    """One real export: --force over a previous sentictl model, default out, siblings untouched."""
    project = tmp_path / "project"
    models = project / "models"
    _fake_previous_model(models / "tiny-finbert")
    (models / "other").mkdir()
    (models / "other" / "keep.txt").write_text("sibling\n")
    (project / "canary").write_text("still here\n")

    run = run_sentictl("export", "--model", str(tiny_checkpoint), "--variants", "fp32", cwd=project)
    assert run.returncode == 1 and b"--force" in run.stderr and b"Traceback" not in run.stderr

    run = run_sentictl(
        "export", "--model", str(tiny_checkpoint), "--variants", "fp32", "--force", cwd=project, timeout=600
    )
    err = run.stderr.decode()
    assert run.returncode == 0, err[-3000:]
    out = models / "tiny-finbert"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["created"] != "2000-01-01T00:00:00+00:00"
    assert manifest["source"]["kind"] == "local" and set(manifest["variants"]) == {"fp32"}
    assert (out / "model.onnx").read_bytes() != b"old onnx"
    assert sorted(p.name for p in models.iterdir()) == ["other", "tiny-finbert"]  # no .old/.partial
    assert (models / "other" / "keep.txt").read_text() == "sibling\n"
    assert (project / "canary").read_text() == "still here\n"
    assert f"wrote {out.resolve()} (fp32)" in err
