"""A variant as a small graph file plus one weights file that ONNX Runtime maps instead of copying.

Loading a single-file ONNX model, ONNX Runtime holds the protobuf's copy of every weight while it
builds its own tensors: on bert-base int8 the load alone peaked at 367 MB (bare ORT) and made
`sentictl serve` 414 MB before its first request. With the weights in an external file at
aligned offsets, ORT maps that file read-only instead: the load peak halves, the pages are
file-backed (clean, shared by every process that serves the same model, reclaimable), and rows of
the embedding table no text uses never become resident (benchmarks/NOTES.md, issue 13 goal 4).

The layout is ONNX's standard external-data form (``location``/``offset``/``length`` on each
initializer), so optimum, onnx and any ORT load it without help: every initializer of at least
:data:`MIN_EXTERNAL_BYTES` goes to ``<file>.data`` beside ``<file>``; those of at least
:data:`ALIGN` bytes start at a multiple of :data:`ALIGN` (64 KiB: the allocation granularity of
Windows, a multiple of every page size, and the largest padding onnx's writer accepts), which is
what ORT needs to map them; smaller ones are packed at 64-byte offsets and copied (they are a few
kilobytes each). The manifest records the data file and its sha256 next to the graph's, and the
loader checks both before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_EXTERNAL_BYTES = 1024
ALIGN = 64 * 1024
_SMALL_ALIGN = 64
DATA_SUFFIX = ".data"


def data_file_name(model_file: str) -> str:
    """The weights file that goes with a graph file: model_int8.onnx → model_int8.onnx.data."""
    return model_file + DATA_SUFFIX


def externalize(path: Path) -> Path | None:
    """Rewrite ``path`` in place as graph + ``<name>.data``; returns the data file (None: no initializer was large enough)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    data_name = data_file_name(path.name)
    data_path = path.with_name(data_name)
    tmp_data = data_path.with_name(data_name + ".partial")
    moved = 0
    offset = 0
    with open(tmp_data, "wb") as fh:
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
                continue  # already external, or stored in typed fields (tiny constants)
            raw = tensor.raw_data
            if len(raw) < MIN_EXTERNAL_BYTES:
                continue
            align = ALIGN if len(raw) >= ALIGN else _SMALL_ALIGN
            pad = (-offset) % align
            if pad:
                fh.write(b"\0" * pad)
                offset += pad
            fh.write(raw)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            moved += 1
        fh.flush()
        os.fsync(fh.fileno())
    if not moved:
        tmp_data.unlink()
        return None
    tmp_graph = path.with_name(path.name + ".partial")
    onnx.save(model, str(tmp_graph))
    os.replace(tmp_data, data_path)
    os.replace(tmp_graph, path)
    return data_path
