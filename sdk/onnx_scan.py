"""Refuse ONNX models that load tensors from outside the file, without depending on `onnx`.

onnxruntime follows a tensor's `external_data` location on disk; an artifact from elsewhere
must be self-contained, so the SDK walks the protobuf wire format along every path that can
hold a tensor (initializers, sparse initializers, node attributes, subgraphs, functions) and
rejects any tensor whose data lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ArtifactError

# (message, field number) -> message type of that field; others are skipped.
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE = 1, 5, 15
FUNCTION_NODE = 7
NODE_ATTRIBUTE = 5
ATTR_TENSOR, ATTR_GRAPH, ATTR_TENSORS, ATTR_GRAPHS = 5, 6, 10, 11
ATTR_SPARSE, ATTR_SPARSES = 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14

CHILDREN: dict[str, dict[int, str]] = {
    "model": {MODEL_GRAPH: "graph", MODEL_FUNCTIONS: "function"},
    "graph": {GRAPH_NODE: "node", GRAPH_INITIALIZER: "tensor", GRAPH_SPARSE: "sparse"},
    "function": {FUNCTION_NODE: "node"},
    "node": {NODE_ATTRIBUTE: "attribute"},
    "attribute": {ATTR_TENSOR: "tensor", ATTR_GRAPH: "graph", ATTR_TENSORS: "tensor",
                  ATTR_GRAPHS: "graph", ATTR_SPARSE: "sparse", ATTR_SPARSES: "sparse"},
    "sparse": {SPARSE_VALUES: "tensor", SPARSE_INDICES: "tensor"},
    "tensor": {},
}


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ArtifactError("model file is not a valid ONNX protobuf (truncated varint)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield field, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ArtifactError("model file is not a valid ONNX protobuf (truncated field)")
            yield field, wire, data[pos : pos + length]
            pos += length
        else:
            raise ArtifactError(f"model file is not a valid ONNX protobuf (wire type {wire})")
        if pos > len(data):
            raise ArtifactError("model file is not a valid ONNX protobuf (truncated)")


def check_self_contained(model: bytes) -> None:
    """Raise ArtifactError if any tensor in the model refers to external data."""
    stack: list[tuple[str, memoryview]] = [("model", memoryview(model))]
    seen_graph = False
    while stack:
        kind, data = stack.pop()
        for field, wire, value in _fields(data):
            if kind == "tensor" and (field == TENSOR_EXTERNAL_DATA or
                                     (field == TENSOR_DATA_LOCATION and value == 1)):
                raise ArtifactError("model references external data files; bard artifacts "
                                    "must be a single self-contained .onnx file")
            child = CHILDREN[kind].get(field)
            if child is not None and wire == 2:
                assert isinstance(value, memoryview)
                seen_graph = seen_graph or (kind == "model" and child == "graph")
                stack.append((child, value))
    if not seen_graph:
        raise ArtifactError("model file is not a valid ONNX model (no graph)")
