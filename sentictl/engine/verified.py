"""The files one model variant runs, read once and checked: only verified bytes ever run.

The graph, every external-data file it names and the tokenizer are read into private memory (large
weights: copied into a private folder while hashing) and checked against the manifest's sha256;
the tokenizer and the ONNX Runtime session are then built from exactly these bytes, so a file
replaced, edited or truncated while the process runs changes nothing it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, ManifestError
from . import integrity
from .manifest import MANIFEST, data_entries, fingerprint, is_foreign

# The largest tokenizer.json a model may bring: real ones are a few MB (BERT's 0.7 MB, a 250,000-token
# multilingual one about 17 MB); a 10-million-entry vocabulary took 42 s and 2.8 GB before failing.
TOKENIZER_MAX_BYTES = 64 << 20


class VerifiedFiles:
    """A variant's graph, external data and tokenizer, checked; ``fingerprint`` names exactly these bytes.

    ``mode`` (see sentictl.engine.integrity): "always" hashes every file, "stamp" trusts a valid
    verified stamp and hashes otherwise, "off" checks nothing and gives an *unverified* fingerprint
    that never equals the genuine one. A mismatch raises IntegrityError.
    """

    def __init__(self, model_dir: Path, manifest: dict[str, Any], variant: str, mode: str):
        self.model_dir = model_dir
        self.manifest = manifest
        self.variant = variant
        self.mode = mode
        self.graph = b""
        self.tokenizer = b""
        # Large weights files are copied (and checked on the way) into a private folder ORT maps them
        # from; without one (no writable folder), they are kept in memory instead (costs RSS).
        self.private: Path | None = None
        self.external: dict[str, bytes | None] = {}  # None: the private folder holds its checked copy
        try:
            self.fingerprint = self._verify(manifest["variants"][variant])
        except BaseException:
            self.discard()
            raise

    def _verify(self, entry: dict[str, Any]) -> str:
        mode = self.mode
        tok = self.manifest["tokenizer"]
        # No manifest records a foreign folder's hashes: the hashes of its files as they are now are
        # its identity (a stamp spares hashing them again on the next run).
        foreign = is_foreign(self.manifest) and mode != "off"
        graph_path = self.model_dir / entry["file"]
        if not graph_path.is_file():
            raise ManifestError(f"{graph_path} is missing: the model directory is incomplete; re-run `sentictl export`")
        self.graph, sha = self._read(graph_path, None if foreign else entry.get("sha256"), mode)
        if foreign:
            entry["sha256"] = sha
        self.private = integrity.private_dir()
        extra = self._weights(entry, graph_path, foreign)
        tok_path = self.model_dir / tok["file"]
        _check_tokenizer_size(tok_path)
        self.tokenizer, sha = self._read(tok_path, None if foreign else tok.get("sha256"), mode)
        if foreign:
            tok["sha256"] = sha
            if extra:  # part of the identity (foreign.identity): replacing weights.bin is a new model
                self.manifest["foreign"]["external_data"] = extra
            return fingerprint(self.manifest, self.variant)
        genuine = fingerprint(self.manifest, self.variant)
        if mode == "off":
            files = [graph_path, *(self.model_dir / name for name in self.external), tok_path]
            return integrity.unverified_fingerprint(genuine, files)
        return genuine

    def _weights(self, entry: dict[str, Any], graph_path: Path, foreign: bool) -> list[list[Any]]:
        """Check every external-data file the graph reads (kept for loading) and every one the manifest
        names (checked only); a foreign graph's files beyond the recorded ones are returned with their sha256."""
        mode = self.mode
        recorded = {d["file"]: d for d in data_entries(entry)}
        extra: list[list[Any]] = []  # a foreign graph's weights files beyond <graph>.data / <graph>_data
        try:
            locations = integrity.external_locations(self.graph)
        except ValueError as exc:
            raise ManifestError(
                f"onnxruntime cannot load {graph_path}: it is not a readable ONNX model ({exc})"
            ) from None
        for location in locations:
            path = self.model_dir / location
            if not integrity.safe_location(location):
                raise ManifestError(f"{graph_path} keeps weights in {location!r}, outside its folder: refused")
            if not path.is_file():
                raise ManifestError(
                    f"{path} is missing: {entry['file']} keeps its weights there (copy both "
                    f"files together, or re-run `sentictl export`)"
                )
            item = recorded.get(location)
            if item is None and not foreign and mode != "off":
                raise IntegrityError(
                    f"{graph_path} keeps weights in {location}, for which {MANIFEST} records no "
                    f"sha256: re-run `sentictl export`"
                )
            sha = self._take(path, location, None if foreign else (item or {}).get("sha256"))
            if foreign and item is not None:
                item["sha256"] = sha
            elif foreign:
                extra.append([location, sha])
        for location, item in recorded.items():
            if location in self.external:
                continue
            # A weights file the manifest names but the graph does not read: never loaded, still checked.
            path = self.model_dir / location
            if not path.is_file():
                raise ManifestError(
                    f"{path} is missing: {entry['file']} keeps its weights there (copy both "
                    f"files together, or re-run `sentictl export`)"
                )
            if foreign:
                item["sha256"] = integrity.current_sha256(path, mode)
            elif mode != "off":
                integrity.check_file(path, item.get("sha256"), mode, MANIFEST)
        return extra

    @staticmethod
    def _read(path: Path, expected: str | None, mode: str) -> tuple[bytes, str | None]:
        """A file's bytes in private memory, checked (see integrity.read_verified); a missing file is one line."""
        try:
            return integrity.read_verified(path, expected, mode, MANIFEST)
        except FileNotFoundError:
            raise ManifestError(
                f"{path} is missing: the model directory is incomplete; re-run `sentictl export`"
            ) from None
        except IsADirectoryError:
            raise ManifestError(f"{path} is a directory, not a model file") from None

    def _take(self, path: Path, location: str, expected: str | None) -> str | None:
        """Check an external-data file and keep what was checked for loading: a private copy, or its bytes."""
        if self.private is None:
            self.external[location], sha = self._read(path, expected, self.mode)
            return sha
        dest = self.private / location
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = integrity.copy_verified(path, dest, expected, self.mode, MANIFEST)
        except FileNotFoundError:
            raise ManifestError(
                f"{path} is missing: the model directory is incomplete; re-run `sentictl export`"
            ) from None
        except IsADirectoryError:
            raise ManifestError(f"{path} is a directory, not a model file") from None
        except OSError:
            # The private folder cannot take the copy (disk full, read-only): keep the bytes in memory
            # instead, those of the copies made so far too (they were checked when copied).
            self._into_memory()
            return self._take(path, location, expected)
        self.external[location] = None
        return sha

    def _into_memory(self) -> None:
        """Read the private copies made so far back into memory and drop the private folder."""
        private = self.private
        if private is not None:
            for done in [name for name, data in self.external.items() if data is None]:
                self.external[done] = (private / done).read_bytes()
        self._remove_private()

    def source(self, name: str) -> str | bytes:
        """What ORT loads the graph from: the path of its private copy (beside the copies of its weights,
        which ORT maps), or its bytes (the external data then goes in from memory too).

        Never the model folder's files: ORT would map <graph>.data from there (MAP_PRIVATE of the file,
        so a `cp` over it changes live weights, and truncating it kills the process with SIGBUS)."""
        if self.private is None:
            return self.graph
        try:
            with open(self.private / name, "xb") as fh:
                fh.write(self.graph)
        except OSError:
            # The private folder cannot take the graph (disk full, a file size limit): load everything
            # from memory instead (verified all the same; costs RSS while loading).
            self._into_memory()
            return self.graph
        self.graph = b""  # ORT reads the copy: free these bytes before it loads (a single-file graph is large)
        return str(self.private / name)

    def discard(self) -> None:
        """Drop the bytes and remove the private copies: ORT keeps its mappings, nobody can open them any more."""
        self.graph = self.tokenizer = b""
        self.external = {}
        self._remove_private()

    def _remove_private(self) -> None:
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None


def _check_tokenizer_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # missing or unreadable: reading it says so in its own words
    if size > TOKENIZER_MAX_BYTES:
        raise ManifestError(
            f"{path} is {size / 1e6:,.0f} MB, over the {TOKENIZER_MAX_BYTES >> 20} MB a tokenizer may "
            f"take: is it the right file?"
        )
