"""Builders of hostile and damaged artifacts, in one place (used by the SDK's tests).

Models are built with `onnx`; where `onnx` would refuse to write something (an overlong tag, a
truncated field), the protobuf bytes are assembled by hand with the helpers below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from bard_sdk.digest import sha256_bytes
from onnx import TensorProto, helper

SENTINEL = np.full(4, 1234.5, dtype=np.float32)  # what a stolen file would put in the outputs
WIRE_LEN = 2
MODEL_GRAPH, GRAPH_INITIALIZER = 7, 5

# ------------------------------------------------------------------ protobuf by hand


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_field(field: int, payload: bytes, tag_bytes: bytes | None = None) -> bytes:
    return (tag_bytes if tag_bytes is not None else tag(field, WIRE_LEN)) + varint(
        len(payload)) + payload


def with_graph_bytes(model: onnx.ModelProto, graph: bytes) -> bytes:
    """The model's bytes with its graph field replaced by `graph` (hand-made bytes)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ClearField("graph")
    return copy.SerializeToString() + length_field(MODEL_GRAPH, graph)


# ------------------------------------------------------------------ small models


def external_tensor(name: str, location: str, size: int = 4) -> TensorProto:
    """A float tensor whose data lives in the file `location` (relative to the model)."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[size])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def plain_tensor(name: str, size: int = 4) -> TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, [size], np.zeros(size, np.float32))


def add_graph(initializers: list[TensorProto], nodes: list[onnx.NodeProto] | None = None,
              name: str = "g") -> onnx.GraphProto:
    """Y = X + W, with W among `initializers` (or made by `nodes`)."""
    return helper.make_graph(
        nodes if nodes is not None else [helper.make_node("Add", ["X", "W"], ["Y"])], name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])], initializers)


def make_model(graph: onnx.GraphProto, **kwargs: Any) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8, **kwargs)


def add_model(location: str | None = None) -> bytes:
    """Y = X + W; W is external (at `location`) or, with None, four zeros in the file."""
    weight = plain_tensor("W") if location is None else external_tensor("W", location)
    return make_model(add_graph([weight])).SerializeToString()


def constant_node(location: str, output: str = "W") -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], value=external_tensor("c", location))


def _sparse(location: str) -> onnx.SparseTensorProto:
    values = external_tensor("W", location, size=1)
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    return helper.make_sparse_tensor(values, indices, [4])


def hostile_models(location: str) -> dict[str, bytes]:
    """Every place a tensor can hide, each holding one external reference to `location`."""
    models: dict[str, bytes] = {}
    models["initializer"] = add_model(location)
    location_only = plain_tensor("W")
    location_only.data_location = TensorProto.EXTERNAL  # no external_data entries at all
    models["data_location only"] = make_model(add_graph([location_only])).SerializeToString()
    graph = add_graph([])
    graph.sparse_initializer.append(_sparse(location))
    models["sparse initializer"] = make_model(graph).SerializeToString()
    models["Constant attribute"] = make_model(add_graph(
        [], [constant_node(location), helper.make_node("Add", ["X", "W"], ["Y"])])
    ).SerializeToString()
    tensors = helper.make_node("Custom", ["X"], ["Y"], domain="bard.test")
    tensors.attribute.append(helper.make_attribute("tables", [external_tensor("t", location)]))
    models["tensors attribute"] = make_model(add_graph([], [tensors])).SerializeToString()
    sparse_attr = helper.make_node("Constant", [], ["W"], sparse_value=_sparse(location))
    models["sparse attribute"] = make_model(add_graph(
        [], [sparse_attr, helper.make_node("Add", ["X", "W"], ["Y"])])).SerializeToString()
    branch = helper.make_graph([helper.make_node("Identity", ["B"], ["Z"])], "then", [],
                               [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [4])],
                               [external_tensor("B", location)])
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["Z2"])], "else", [],
                              [helper.make_tensor_value_info("Z2", TensorProto.FLOAT, [4])])
    condition = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    models["If subgraph"] = make_model(add_graph([condition], [
        helper.make_node("If", ["cond"], ["Y"], then_branch=branch, else_branch=other)]),
    ).SerializeToString()
    body = helper.make_graph(
        [constant_node(location, "K"), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])])
    models["Loop body"] = make_model(add_graph([], [
        helper.make_node("Loop", ["", ""], [], body=body),
        helper.make_node("Identity", ["X"], ["Y"])])).SerializeToString()
    function = helper.make_function("bard.test", "F", ["A"], ["B"], [
        constant_node(location, "K"), helper.make_node("Add", ["A", "K"], ["B"])],
        [helper.make_opsetid("", 17)])
    models["function body"] = _function_model(function)
    defaulted = onnx.FunctionProto()
    defaulted.CopyFrom(function)
    del defaulted.node[:]
    defaulted.node.append(helper.make_node("Identity", ["A"], ["B"]))
    defaulted.attribute_proto.append(helper.make_attribute("table",
                                                           external_tensor("d", location)))
    models["function attribute default"] = _function_model(defaulted)
    training = onnx.TrainingInfoProto()
    training.initialization.CopyFrom(add_graph([external_tensor("W", location)], name="init"))
    model = make_model(add_graph([plain_tensor("W")]))
    model.training_info.append(training)
    models["training_info graph"] = model.SerializeToString()
    return models


def _function_model(function: onnx.FunctionProto) -> bytes:
    model = helper.make_model(
        add_graph([], [helper.make_node("F", ["X"], ["Y"], domain="bard.test")]),
        functions=[function], ir_version=8,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("bard.test", 1)])
    return model.SerializeToString()


def wire_tricks(location: str) -> dict[str, bytes]:
    """Protobuf encodings a naive scanner reads differently from onnxruntime (or not at all):
    each hides or garbles an external initializer."""
    base = make_model(add_graph([]))
    graph = base.graph.SerializeToString()
    tensor = external_tensor("W", location).SerializeToString()
    initializer = tag(GRAPH_INITIALIZER, WIRE_LEN)  # 0x2a
    tricks = {
        # protobuf reads tags as uint32: bit 32 wraps away and field 5 (initializer) remains
        "tag with bit 32 set": varint((GRAPH_INITIALIZER << 3 | WIRE_LEN) + 2**32),
        "overlong tag (padded with a zero byte)": bytes([initializer[0] | 0x80, 0x80, 0x00]),
        "six-byte tag": bytes([initializer[0] | 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
    }
    out = {name: with_graph_bytes(base, graph + length_field(0, tensor, tag_bytes=raw))
           for name, raw in tricks.items()}
    out["field number 0"] = with_graph_bytes(base, graph + length_field(0, tensor))
    for wire in (3, 4, 6, 7):
        out[f"wire type {wire}"] = with_graph_bytes(base, graph + tag(GRAPH_INITIALIZER, wire)
                                                    + tensor)
    out["length beyond the message"] = with_graph_bytes(
        base, graph + tag(GRAPH_INITIALIZER, WIRE_LEN) + varint(len(tensor) + 50) + tensor)
    out["eleven-byte varint"] = with_graph_bytes(
        base, graph + tag(1, 0) + bytes([0xFF] * 10 + [0x01]))
    out["initializer as a varint"] = with_graph_bytes(base, graph + tag(GRAPH_INITIALIZER, 0)
                                                      + varint(5))
    # data_location is an int32 enum: protobuf keeps the low 32 bits, so 2**32 + 1 is EXTERNAL
    plain = plain_tensor("W").SerializeToString()
    wrapped = plain + tag(14, 0) + varint(2**32 + 1)
    out["data_location 2**32 + 1"] = with_graph_bytes(
        base, graph + length_field(GRAPH_INITIALIZER, wrapped))
    out["data_location length-delimited"] = with_graph_bytes(
        base, graph + length_field(GRAPH_INITIALIZER, plain + length_field(14, b"\x01")))
    return out


# ------------------------------------------------------------------ artifacts


def edit_manifest(artifact: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, allow_nan=False))


def rehash(artifact: Path, variant: str = "fp32") -> None:
    """Make the manifest match a model file that was changed (an attacker writes both)."""
    def update(manifest: dict[str, Any]) -> None:
        entry = manifest["files"][variant]
        data = (artifact / entry["path"]).read_bytes()
        entry["sha256"], entry["bytes"] = sha256_bytes(data), len(data)
    edit_manifest(artifact, update)


def externalise_head_bias(artifact: Path, location: str) -> int:
    """Point the model's output bias at `location`; returns its size in floats."""
    model = onnx.load(str(artifact / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("head.bias"))
    size = int(np.prod(bias.dims))
    bias.ClearField("raw_data")
    del bias.float_data[:]
    bias.CopyFrom(external_tensor(bias.name, location, size))
    bias.dims[:] = [size]
    (artifact / "model.onnx").write_bytes(model.SerializeToString())
    rehash(artifact)
    return size


def write_sentinel(path: Path, size: int = 4) -> np.ndarray:
    values = np.full(size, SENTINEL[0], dtype=np.float32)
    path.write_bytes(values.tobytes())
    return values


def widen_logits(artifact: Path) -> None:
    """A graph that still declares [batch, time, V] logits but emits V + 1 columns, through a
    data-dependent Slice that shape inference cannot see through."""
    model = onnx.load(str(artifact / "model.onnx"))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
    graph.initializer.extend([helper.make_tensor("w_one", TensorProto.INT64, [1], [1]),
                              helper.make_tensor("w_zero", TensorProto.INT64, [1], [0]),
                              helper.make_tensor("w_axis", TensorProto.INT64, [1], [2])])
    graph.node.extend([
        helper.make_node("ReduceMax", ["tokens"], ["w_max"], keepdims=1),
        helper.make_node("Reshape", ["w_max", "w_one"], ["w_max1"]),
        helper.make_node("Sub", ["w_max1", "w_max1"], ["w_dyn_zero"]),
        helper.make_node("Add", ["w_dyn_zero", "w_one"], ["w_end"]),
        helper.make_node("Slice", ["logits_raw", "w_zero", "w_end", "w_axis"], ["w_extra"]),
        helper.make_node("Concat", ["logits_raw", "w_extra"], ["logits"], axis=2),
    ])
    (artifact / "model.onnx").write_bytes(model.SerializeToString())
    rehash(artifact)
