"""Artifact -> torch weights: read a CharLSTM back out of `model.onnx` and its manifest, so a
shipped or exported model can be fine-tuned (`bard train --init-from`).

The graph is the one `onnx_graph.export_onnx` writes: an embedding `Gather` on the (clamped)
tokens, one fused forward `LSTM` node per layer with W, R and B as initializers (ONNX orders the
gates i, o, f, c; PyTorch i, f, g, o), and the head as `MatMul` + `Add` (or one `Gemm`). What
does not match that, or disagrees with the manifest's sizes, is refused with one line: only an
architecture read unambiguously is trained on. The rebuilt model is checked against the
artifact through bard_sdk before it is returned (the parity gate's tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bard_sdk
import numpy as np
import onnx
import torch
from bard.training.config import ModelConfig
from bard.training.errors import UsageError
from bard.training.finetune import Parent, parent_from_run
from bard.training.model import CharLSTM
from bard.training.records import dataclass_from_json
from bard.training.rundir import RUN_FILE
from bard_sdk.manifest import MANIFEST_FILE, read_model_bytes
from onnx import numpy_helper

from .parity import LOGITS, torch_step

ONNX_TO_TORCH_GATES = (0, 2, 3, 1)  # torch's i, f, g, o as positions in ONNX's i, o, f, c
REGULARISATION = ("dropout", "weight_drop", "embedding_dropout")


class ArchitectureError(UsageError):
    """The source's graph or manifest does not describe a CharLSTM that bard can rebuild."""


Refuse = Callable[[str], ArchitectureError]


def load_parent(spec: str) -> Parent:
    """`--init-from SPEC`: an artifact directory, a run directory, or a bundled model's name."""
    path = Path(spec)
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return parent_from_artifact(path)
        if (path / RUN_FILE).is_file() or (path / "checkpoints").is_dir():
            return parent_from_run(path)
        raise ArchitectureError(f"--init-from {spec}: neither an artifact ({MANIFEST_FILE}) "
                                f"nor a training run ({RUN_FILE}) is in that directory")
    if spec == bard_sdk.BUNDLED_MODEL:
        return parent_from_artifact(bard_sdk.bundled_model_path())
    raise UsageError(f"--init-from {spec}: no such directory, and not the name of a bundled "
                     f"model ({bard_sdk.BUNDLED_MODEL})")


def parent_from_artifact(directory: Path) -> Parent:
    try:
        sdk_model = bard_sdk.load(directory, device="cpu", threads=1)
        data = read_model_bytes(sdk_model.manifest, "fp32")
    except bard_sdk.BardError as err:
        raise UsageError(f"--init-from {directory}: {err}") from None
    manifest = sdk_model.manifest
    config = model_config(manifest, directory)
    weights = weights_from_onnx(onnx.load_from_string(data), config, directory)
    model = CharLSTM(config)
    model.load_state_dict(weights)
    check_round_trip(model.eval(), sdk_model, directory)
    return Parent(name=manifest.name, kind="artifact", location=str(directory.resolve()),
                  sha256=manifest.file("fp32").sha256, model_config=config,
                  vocab=tuple(manifest.vocabulary), weights=weights)


def model_config(manifest: bard_sdk.Manifest, directory: Path) -> ModelConfig:
    """Sizes from the manifest; dropout and weight drop from its provenance when recorded
    (they are training settings, absent from the graph), else the defaults."""
    sizes = manifest.raw["model"]
    recorded = manifest.provenance.get("model_config")
    kept = {}
    if isinstance(recorded, dict):
        kept = {k: recorded[k] for k in REGULARISATION if k in recorded}
    try:
        return dataclass_from_json(ModelConfig, {
            "vocab_size": sizes["vocab_size"], "embedding_dim": sizes["embedding_dim"],
            "hidden_size": sizes["hidden_size"], "num_layers": sizes["num_layers"], **kept},
            f"{directory / MANIFEST_FILE} model")
    except UsageError as err:
        raise ArchitectureError(f"cannot read the architecture of {directory}: {err}") from None


def weights_from_onnx(graph: onnx.ModelProto, config: ModelConfig,
                      where: Path) -> dict[str, torch.Tensor]:
    """The CharLSTM state dict held by an exported graph, checked against `config`."""
    def refuse(problem: str) -> ArchitectureError:
        return ArchitectureError(f"cannot read the architecture of {where}: {problem}")

    init = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    nodes = list(graph.graph.node)
    gathers = [n for n in nodes if n.op_type == "Gather" and n.input[0] in init]
    if len(gathers) != 1:
        raise refuse(f"expected one embedding lookup, found {len(gathers)}")
    weights = {"embedding.weight": init[gathers[0].input[0]]}
    lstms = [n for n in nodes if n.op_type == "LSTM"]
    if len(lstms) != config.num_layers:
        raise refuse(f"the manifest says {config.num_layers} layers, the graph has "
                     f"{len(lstms)} LSTM nodes")
    for layer, node in enumerate(lstms):
        weights.update(lstm_weights(node, init, layer, refuse))
    weights.update(head_weights(nodes, init, refuse))
    expected = CharLSTM(config).state_dict()
    for name, tensor in expected.items():
        if weights[name].shape != tuple(tensor.shape):
            raise refuse(f"{name} is {list(weights[name].shape)} in the graph, the manifest's "
                         f"sizes imply {list(tensor.shape)}")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32))  # a writable copy
            for k, v in weights.items()}


def lstm_weights(node: onnx.NodeProto, init: dict[str, np.ndarray], layer: int,
                 refuse: Refuse) -> dict[str, np.ndarray]:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    unusual = sorted(set(attributes) - {"hidden_size"})
    if unusual:
        raise refuse(f"LSTM layer {layer} sets {', '.join(unusual)}")
    names = list(node.input[1:4])
    if len(names) < 3 or not all(n in init for n in names):
        raise refuse(f"LSTM layer {layer}'s W, R and B are not initializers")
    w, r, b = (init[n] for n in names)
    hidden = int(attributes["hidden_size"])
    if w.ndim != 3 or r.ndim != 3 or b.shape != (1, 8 * hidden) or w.shape[:2] != (1, 4 * hidden):
        raise refuse(f"LSTM layer {layer} has W {list(w.shape)}, R {list(r.shape)}, "
                     f"B {list(b.shape)}: not one forward direction of {hidden} units")

    def reorder(tensor: np.ndarray) -> np.ndarray:
        gates = np.split(tensor, 4, axis=0)
        return np.concatenate([gates[i] for i in ONNX_TO_TORCH_GATES], axis=0)

    return {f"lstm.weight_ih_l{layer}": reorder(w[0]), f"lstm.weight_hh_l{layer}": reorder(r[0]),
            f"lstm.bias_ih_l{layer}": reorder(b[0, : 4 * hidden]),
            f"lstm.bias_hh_l{layer}": reorder(b[0, 4 * hidden :])}


def head_weights(nodes: list[onnx.NodeProto], init: dict[str, np.ndarray],
                 refuse: Refuse) -> dict[str, np.ndarray]:
    """The linear head that produces `logits`: MatMul + Add, or one Gemm."""
    producer = {out: n for n in nodes for out in n.output}
    last = producer.get("logits")
    if last is not None and last.op_type == "Gemm":
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in last.attribute}
        if (attributes.get("alpha", 1.0), attributes.get("beta", 1.0),
                attributes.get("transA", 0)) == (1.0, 1.0, 0) and len(last.input) == 3 and \
                all(n in init for n in last.input[1:]):
            weight = init[last.input[1]]
            return {"head.weight": weight if attributes.get("transB", 0) else weight.T,
                    "head.bias": init[last.input[2]]}
    if last is not None and last.op_type == "Add":
        bias = [n for n in last.input if n in init]
        matmul = [producer[n] for n in last.input if n in producer
                  and producer[n].op_type == "MatMul"]
        if len(bias) == 1 and len(matmul) == 1 and matmul[0].input[1] in init:
            return {"head.weight": init[matmul[0].input[1]].T, "head.bias": init[bias[0]]}
    raise refuse("the output layer is not a linear layer (MatMul + Add or Gemm) on "
                 "initializers")


def check_round_trip(model: CharLSTM, sdk_model: bard_sdk.Model, where: Path) -> None:
    """The rebuilt torch model must give the artifact's logits (parity gate tolerance)."""
    config = model.config
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.vocab_size, (2, 64), dtype=np.int64)
    zeros = np.zeros((config.num_layers, 2, config.hidden_size), np.float32)
    expected, _, _ = sdk_model.forward(tokens, zeros, zeros)
    rebuilt, _, _ = torch_step(model, tokens, zeros, zeros)
    diff = float(np.abs(expected - rebuilt).max())
    limit = LOGITS.limit(float(np.abs(expected).max()))
    if not diff <= limit:
        raise ArchitectureError(f"cannot read the architecture of {where}: the rebuilt model's "
                                f"logits differ from the artifact's by {diff:.2e} (limit "
                                f"{limit:.2e}, the parity gate's {LOGITS})")
