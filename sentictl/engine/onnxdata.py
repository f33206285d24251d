"""The files an ONNX model keeps its tensors' bytes in (external data), read from the graph's bytes.

Every file a graph names as external data counts for its identity and its checks (ONNX lets
``location`` be any file name, e.g. ``weights.bin``). On the hot path: the graph is parsed with a
few lines of protobuf wire-format reading, never with the onnx package.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

# ONNX's protobuf field numbers (onnx.proto) on the way to every TensorProto a model may hold.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2

# Reads the message at buf[start:end] (one kind of message: a tensor, a node, a graph...).
_Visit = Callable[[int, int], None]


def _fields(buf: memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of one protobuf message; a length-delimited
    field's span is its payload, a scalar's is empty (its bytes are skipped, never decoded)."""
    end = len(buf) if end is None else end
    pos = start

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
            yield number, wire, pos, pos
        elif wire == 1:
            pos += 8
            yield number, wire, pos, pos
        elif wire == 5:
            pos += 4
            yield number, wire, pos, pos
        elif wire == 2:
            size = varint()
            if pos + size > end:
                raise ValueError("field runs past its message")
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message runs past its end")


def external_locations(graph: bytes | bytearray | memoryview) -> list[str]:
    """Every file an ONNX model's tensors keep their bytes in (``external_data`` ``location``), in first-seen order.

    Walks initializers, sparse initializers, tensors in node attributes, subgraphs and functions.
    Raises ValueError when the bytes are not a readable ONNX model.
    """
    buf = memoryview(graph)
    found: dict[str, None] = {}

    def sub(start: int, end: int, wanted: dict[int, _Visit]) -> None:
        for number, wire, s, e in _fields(buf, start, end):
            visit = wanted.get(number)
            if wire == 2 and visit is not None:
                visit(s, e)

    def tensor(start: int, end: int) -> None:
        for number, wire, s, e in _fields(buf, start, end):
            if number != _TENSOR_EXTERNAL or wire != 2:
                continue
            entry = {k: bytes(buf[a:b]) for k, w, a, b in _fields(buf, s, e) if w == 2}
            if entry.get(_ENTRY_KEY) == b"location" and _ENTRY_VALUE in entry:
                found.setdefault(entry[_ENTRY_VALUE].decode("utf-8", "replace"), None)

    def sparse(start: int, end: int) -> None:
        sub(start, end, {_SPARSE_VALUES: tensor, _SPARSE_INDICES: tensor})

    def attribute(start: int, end: int) -> None:
        sub(
            start,
            end,
            {
                _ATTR_T: tensor,
                _ATTR_TENSORS: tensor,
                _ATTR_G: graph_,
                _ATTR_GRAPHS: graph_,
                _ATTR_SPARSE: sparse,
                _ATTR_SPARSES: sparse,
            },
        )

    def node(start: int, end: int) -> None:
        sub(start, end, {_NODE_ATTRIBUTE: attribute})

    def graph_(start: int, end: int) -> None:
        sub(start, end, {_GRAPH_NODE: node, _GRAPH_INITIALIZER: tensor, _GRAPH_SPARSE: sparse})

    def function(start: int, end: int) -> None:
        sub(start, end, {_FUNCTION_NODE: node})

    try:
        sub(0, len(buf), {_MODEL_GRAPH: graph_, _MODEL_FUNCTIONS: function})
    except (IndexError, RecursionError) as exc:
        raise ValueError(f"not a readable ONNX model ({type(exc).__name__})") from None
    return list(found)


def safe_location(location: str) -> bool:
    """Whether an external-data location names a file inside the model's own folder (relative, no ``..``)."""
    parts = location.replace("\\", "/").split("/")
    return (
        bool(location)
        and not os.path.isabs(location)
        and ".." not in parts
        and "" not in parts
        and not (len(location) > 1 and location[1] == ":")
    )
