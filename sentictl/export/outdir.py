"""Where an export may write, and how a finished model directory replaces what was there.

An export writes only what it creates: the output folder is checked before anything heavy is
loaded, and again just before the finished build is moved into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from .. import config
from ..engine.model import MANIFEST
from ..errors import ExportError
from .checkpoint import local_checkpoint


def default_out(model: str) -> Path:
    """models/<checkpoint name, lower-cased>: ProsusAI/finbert → models/finbert.

    A local checkpoint is named after its resolved folder (``--model ..`` names the parent
    folder, never ``models/..``); a name that is empty, ``.`` or ``..`` becomes ``model``.
    """
    local = local_checkpoint(model)
    name = local.name if local is not None else Path(model.strip().rstrip("/\\")).name
    name = name.strip().lower()
    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        name = "model"
    return config.DEFAULT_MODELS_ROOT / name


def resolve_out(model: str, out: str | Path | None) -> Path:
    """The absolute model directory an export writes: --out, or default_out(model), resolved."""
    chosen = Path(out) if out not in (None, "") else default_out(model)
    return chosen.expanduser().resolve()


def _is_within(path: Path, other: Path) -> bool:
    """True when ``path`` is ``other`` or lies below it (both absolute and resolved)."""
    return path == other or other in path.parents


def check_out_location(out: Path, checkpoint: Path | None) -> None:
    """Refuse an output folder whose replacement could destroy something the export did not create.

    ``out`` must be absolute and resolved. Refused: the current directory, the home directory, a
    file-system root, the checkpoint directory, or any folder that contains one of them; and any
    folder inside the checkpoint. Folders below the current directory (models/finbert) are fine.
    """
    hint = "choose an --out folder of its own, e.g. models/NAME"

    def refuse(why: str) -> None:
        raise ExportError(f"refusing to export to {out}: {why}; {hint}")

    if out == Path(out.anchor):
        refuse("it is a file-system root")
    guarded: list[tuple[Path, str]] = [(Path.cwd().resolve(), "the current directory")]
    try:
        guarded.append((Path.home().resolve(), "your home directory"))
    except (RuntimeError, KeyError, OSError):  # no HOME and no password entry: nothing to guard
        pass
    if checkpoint is not None:
        guarded.append((checkpoint, "the checkpoint directory"))
    for place, what in guarded:
        if out == place:
            refuse(f"it is {what}")
    for place, what in guarded:
        if _is_within(place, out):
            refuse(f"it contains {what} ({place})")
    if checkpoint is not None and _is_within(out, checkpoint):
        refuse(f"it lies inside the checkpoint directory {checkpoint}")


def _sentictl_model_problem(folder: Path) -> str | None:
    """None when ``folder`` holds a model directory written by sentictl export, else why not."""
    manifest_path = folder / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return f"it has no {MANIFEST}"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its {MANIFEST} is not readable JSON ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST} is not a sentictl manifest"
    expected = {"format": int, "labels": dict, "variants": dict, "tokenizer": dict}
    wrong = [
        key
        for key, kind in expected.items()
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool)
    ]
    if wrong:
        return f"its {MANIFEST} is not a sentictl manifest (no valid {', '.join(wrong)})"
    return None


def check_existing_out(out: Path, force: bool) -> None:
    """An existing --out: missing or empty is fine; otherwise only a sentictl model folder, with --force."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory: choose another --out")
    if not any(out.iterdir()):
        return  # an empty folder holds nothing to lose
    problem = _sentictl_model_problem(out)
    if not force:
        if problem is None:
            raise ExportError(f"{out} already holds an exported model: pass --force to replace it, or --out elsewhere")
        raise ExportError(
            f"{out} exists, is not empty and is not a sentictl model folder ({problem}): choose another --out"
        )
    if problem is not None:
        raise ExportError(
            f"refusing to replace {out} even with --force: it is not empty and not a sentictl model folder "
            f"({problem}); choose another --out or empty it yourself"
        )


def seal(work: Path) -> None:
    """Make every file of a finished build read-only (0444), keeping the verified stamps valid.

    A chmod moves a file's ctime, which voids its stamp (see sentictl.engine.integrity): a stamp
    that was valid just before is written again for the file as it is after (same bytes, nobody
    else can reach the private build folder), so the first load after an export hashes nothing.
    """
    from ..engine.integrity import read_stamp, write_stamp

    for path in work.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        sha = read_stamp(path)
        path.chmod(0o444)
        if sha is not None:
            write_stamp(path, sha)


def install(work: Path, out: Path, force: bool) -> None:
    """Move the finished ``work`` folder to ``out``, replacing only an empty folder or a previous sentictl model.

    Its files are made read-only first (:func:`seal`). A previous model is first renamed aside
    (.NAME.old-XXXX), then the new one is renamed in, then the old one is deleted; if the rename in
    fails, the old one is moved back. So an export never writes into a file that exists already:
    a server still running the previous model keeps whatever it loaded, and every new file is a
    new inode.
    """
    seal(work)
    check_existing_out(out, force)  # again: the folder may have changed during the build
    if not out.exists() and not out.is_symlink():
        work.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        work.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        work.rename(out)
    except BaseException:
        try:
            old.rename(out)
        except OSError as exc:
            raise ExportError(f"could not put the previous model back at {out} ({exc}): it is in {old}") from None
        raise
    shutil.rmtree(old, ignore_errors=True)
