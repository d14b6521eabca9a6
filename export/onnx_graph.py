"""PyTorch -> ONNX for the character LSTM, and the checks that make the graph shippable.

We use the TorchScript exporter (`dynamo=False`). With torch 2.13 the default dynamo exporter
froze the time axis of `logits` to the example's length and computed the LSTM's W/R/B from
Slice/Concat nodes at run time; the TorchScript path emits one fused `LSTM` node per layer with
W, R and B as plain initializers (which int8 quantisation and ORT's weight pre-packing need) and
dynamic batch and time. `verify_graph` checks all of that on every export, so a regression in
either exporter fails loudly instead of shipping.

One edit follows the export: padding. Rows of a prefill batch are padded at the end with id -1;
the graph derives each row's length from that, clamps the ids for the embedding lookup, and
feeds the lengths to every LSTM node's `sequence_lens`, so pad positions never touch the state.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from bard.training.model import CharLSTM
from bard_sdk.contract import C0, CN, H0, HN, LOGITS, PADDING_ID, TOKENS
from bard_sdk.contract import INPUT_NAMES as INPUTS
from bard_sdk.contract import OUTPUT_NAMES as OUTPUTS
from onnx import TensorProto, helper

OPSET = 17


class GraphError(RuntimeError):
    """The exported graph breaks the artifact contract (a bug in bard or in an exporter)."""


class _Exportable(torch.nn.Module):
    """Flat tensor signature (tokens, h0, c0) -> (logits, hn, cn) for the exporter."""

    def __init__(self, model: CharLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor,
                c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, (hn, cn) = self.model(tokens, (h0, c0))
        return logits, hn, cn


def export_onnx(model: CharLSTM) -> onnx.ModelProto:
    """Export, add padding support, and verify; returns a checked in-memory model."""
    config = model.config
    wrapper = _Exportable(model).eval()
    example = (torch.zeros(1, 5, dtype=torch.long),
               torch.zeros(config.num_layers, 1, config.hidden_size),
               torch.zeros(config.num_layers, 1, config.hidden_size))
    batch, time = {0: "batch", 1: "time"}, {1: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated (see the module docstring for why we keep it)
        # and warns while tracing nn.LSTM; verify_graph is the real check.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, example, buffer, input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={TOKENS: batch, H0: time, C0: time, LOGITS: batch, HN: time,
                          CN: time},
            opset_version=OPSET, do_constant_folding=True, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue())
    add_padding(graph)
    graph.producer_name = "bard"
    verify_graph(graph, config.num_layers, config.vocab_size)
    return graph


def add_padding(model: onnx.ModelProto) -> None:
    """Route `tokens` through clamp + length computation into every LSTM's sequence_lens.

    A row's length is its count of ids >= 0, which holds because the contract's padding id
    is negative."""
    if PADDING_ID >= 0:
        raise GraphError(f"padding id {PADDING_ID} must be negative for the length computation")
    graph = model.graph
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[1] == TOKENS]
    if len(gathers) != 1:
        raise GraphError(f"expected one embedding Gather on tokens, found {len(gathers)}")
    zero = helper.make_tensor("bard_zero", TensorProto.INT64, [], [0])
    axis = helper.make_tensor("bard_time_axis", TensorProto.INT64, [1], [1])
    graph.initializer.extend([zero, axis])
    new_nodes = [
        helper.make_node("Max", [TOKENS, "bard_zero"], ["bard_safe_tokens"]),
        helper.make_node("GreaterOrEqual", [TOKENS, "bard_zero"], ["bard_is_token"]),
        helper.make_node("Cast", ["bard_is_token"], ["bard_is_token_i32"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["bard_is_token_i32", "bard_time_axis"], ["bard_lengths"],
                         keepdims=0),
    ]
    gathers[0].input[1] = "bard_safe_tokens"
    for node in graph.node:
        if node.op_type == "LSTM":
            while len(node.input) < 5:
                node.input.append("")
            node.input[4] = "bard_lengths"
    for position, node in enumerate(new_nodes):
        graph.node.insert(position, node)


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def verify_graph(model: onnx.ModelProto, num_layers: int, vocab_size: int) -> None:
    """The artifact contract for model.onnx; raises GraphError naming what is wrong."""
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    if [i.name for i in graph.input] != list(INPUTS):
        raise GraphError(f"graph inputs are {[i.name for i in graph.input]}, expected {INPUTS}")
    if [o.name for o in graph.output] != list(OUTPUTS):
        raise GraphError(f"graph outputs are {[o.name for o in graph.output]}, expected {OUTPUTS}")
    opsets = {o.domain: o.version for o in model.opset_import}
    if set(opsets) - {"", "ai.onnx"} or opsets.get("", opsets.get("ai.onnx", 0)) < OPSET:
        raise GraphError(f"graph must use only the standard domain at opset >= {OPSET}: {opsets}")
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    if len(lstms) != num_layers:
        raise GraphError(f"expected {num_layers} fused LSTM nodes, found {len(lstms)}")
    initializers = {t.name for t in graph.initializer}
    for node in lstms:
        for slot, name in zip(("W", "R", "B"), node.input[1:4]):
            if name not in initializers:
                raise GraphError(f"LSTM {node.name} {slot} is computed at run time, "
                                 "not a plain initializer")
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            raise GraphError(f"initializer {tensor.name} uses external data")
    expected = {TOKENS: ["batch", "time"], LOGITS: ["batch", "time", vocab_size]}
    for value in list(graph.input) + list(graph.output):
        dims = _dims(value)
        if value.name in expected and dims != expected[value.name]:
            raise GraphError(f"{value.name} has declared shape {dims}, "
                             f"expected {expected[value.name]}")
        if value.name in (H0, C0, HN, CN) and dims[1] != "batch":
            raise GraphError(f"{value.name} has declared shape {dims}: batch is not dynamic")
