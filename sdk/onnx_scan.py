"""Refuse ONNX models that load tensors from outside the file, without depending on `onnx`.

onnxruntime follows a tensor's `external_data` location on disk; an artifact from elsewhere
must be self-contained, so the SDK walks the protobuf wire format along every path that can
hold a tensor (initializers, sparse initializers, node attributes, subgraphs, functions and
their attribute defaults, training graphs) and rejects any tensor whose data lives elsewhere.

The walk must see exactly what onnxruntime's protobuf parser sees, or a crafted file could hide
a field from it. So it is stricter than protobuf, never looser: a tag must be a canonical varint
of at most 5 bytes and below 2**32 (protobuf reads tags as uint32 and would silently wrap a
longer one onto another field), every varint canonical and at most 10 bytes, field number 0 and
wire types 3, 4 (groups), 6 and 7 refused, every length inside its message, and a field this
scan follows must have the wire type its schema says. Anything else is an `ArtifactError`.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ArtifactError

MAX_MODEL_BYTES = 2**31 - 1  # protobuf's own limit for one message
MAX_TAG_BYTES, MAX_VARINT_BYTES = 5, 10
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

# Field numbers from onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, ...).
MODEL_GRAPH, MODEL_TRAINING_INFO, MODEL_FUNCTIONS = 7, 20, 25
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE = 1, 5, 15
FUNCTION_NODE, FUNCTION_ATTRIBUTE_PROTO = 7, 11
TRAINING_INITIALIZATION, TRAINING_ALGORITHM = 1, 2
NODE_ATTRIBUTE = 5
ATTR_TENSOR, ATTR_GRAPH, ATTR_TENSORS, ATTR_GRAPHS = 5, 6, 10, 11
ATTR_SPARSE, ATTR_SPARSES = 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14

# (message, field number) -> message type of that field; other fields are skipped.
CHILDREN: dict[str, dict[int, str]] = {
    "model": {MODEL_GRAPH: "graph", MODEL_TRAINING_INFO: "training", MODEL_FUNCTIONS: "function"},
    "training": {TRAINING_INITIALIZATION: "graph", TRAINING_ALGORITHM: "graph"},
    "graph": {GRAPH_NODE: "node", GRAPH_INITIALIZER: "tensor", GRAPH_SPARSE: "sparse"},
    "function": {FUNCTION_NODE: "node", FUNCTION_ATTRIBUTE_PROTO: "attribute"},
    "node": {NODE_ATTRIBUTE: "attribute"},
    "attribute": {ATTR_TENSOR: "tensor", ATTR_GRAPH: "graph", ATTR_TENSORS: "tensor",
                  ATTR_GRAPHS: "graph", ATTR_SPARSE: "sparse", ATTR_SPARSES: "sparse"},
    "sparse": {SPARSE_VALUES: "tensor", SPARSE_INDICES: "tensor"},
    "tensor": {},
}

EXTERNAL = ("model references external data files; bard artifacts must be a single "
            "self-contained .onnx file")


def _invalid(what: str, offset: int) -> ArtifactError:
    return ArtifactError(f"model file is not a valid ONNX protobuf that bard can read "
                         f"unambiguously: {what} at byte {offset}")


def _varint(data: memoryview, pos: int, base: int, limit: int) -> tuple[int, int]:
    """A canonical varint of at most `limit` bytes starting at data[pos]."""
    result = 0
    for index in range(limit):
        if pos + index >= len(data):
            raise _invalid("truncated varint", base + pos)
        byte = data[pos + index]
        result |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if byte == 0 and index > 0:
                raise _invalid("overlong (non-canonical) varint", base + pos)
            if index == MAX_VARINT_BYTES - 1 and byte > 1:
                raise _invalid("varint beyond 64 bits", base + pos)
            return result, pos + index + 1
    raise _invalid(f"varint longer than {limit} bytes", base + pos)


def _fields(data: memoryview, base: int) -> Iterator[tuple[int, int, int, int | memoryview]]:
    """(field, wire type, absolute offset of the value, value) for each field of a message;
    a length-delimited value is its bytes, a varint its number, fixed-size ones are skipped."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos, base, MAX_TAG_BYTES)
        if tag >= 2**32:
            raise _invalid("tag beyond 32 bits", base + start)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _invalid("field number 0", base + start)
        if wire == VARINT:
            value, pos = _varint(data, pos, base, MAX_VARINT_BYTES)
            yield field, wire, base + start, value
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
            if pos > len(data):
                raise _invalid("truncated fixed-size field", base + start)
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(data, pos, base, MAX_VARINT_BYTES)
            if length > len(data) - pos:
                raise _invalid("field longer than its message", base + start)
            yield field, wire, base + pos, data[pos : pos + length]
            pos += length
        else:
            raise _invalid(f"wire type {wire}", base + start)


def check_self_contained(model: bytes) -> None:
    """Raise ArtifactError if any tensor in the model refers to external data, or if the file
    holds anything this scan cannot read exactly as onnxruntime would."""
    if len(model) > MAX_MODEL_BYTES:
        raise ArtifactError(f"model file is larger than protobuf's {MAX_MODEL_BYTES} bytes")
    stack: list[tuple[str, memoryview, int]] = [("model", memoryview(model), 0)]
    seen_graph = False
    while stack:
        kind, data, base = stack.pop()
        children = CHILDREN[kind]
        for field, wire, offset, value in _fields(data, base):
            if kind == "tensor":
                if field == TENSOR_EXTERNAL_DATA:
                    raise ArtifactError(EXTERNAL)
                if field == TENSOR_DATA_LOCATION and (wire != VARINT or value != 0):
                    raise ArtifactError(EXTERNAL)  # anything but DEFAULT (0) is refused
            child = children.get(field)
            if child is None:
                continue
            if wire != LENGTH_DELIMITED:
                raise _invalid(f"field {field} of a {kind} with wire type {wire}", offset)
            assert isinstance(value, memoryview)
            seen_graph = seen_graph or (kind == "model" and field == MODEL_GRAPH)
            stack.append((child, value, offset))
    if not seen_graph:
        raise ArtifactError("model file is not a valid ONNX model (no graph)")
