"""The generation engines `bard bench` compares, all on the same weights.

Each engine is a function (prompt ids [batch, prompt_len], new characters) -> ids, greedy, so
every engine does the same work and the bare onnxruntime loop is a fair floor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bard_sdk
import numpy as np
import onnx
import onnxruntime as ort
import torch
from bard.training.config import ModelConfig
from bard.training.model import CharLSTM
from bard_sdk.contract import C0, H0, LOGITS, TOKENS
from onnx import numpy_helper

Engine = Callable[[np.ndarray, int], np.ndarray]
TUTORIAL_WINDOW = 32


def torch_model_from_onnx(path: Path, manifest: bard_sdk.Manifest) -> CharLSTM:
    """Rebuild the PyTorch model from model.onnx's initializers (ONNX gates are i,o,f,c;
    PyTorch's are i,f,g,o), so PyTorch runs exactly the shipped weights."""
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sizes = manifest.sizes
    config = ModelConfig(vocab_size=sizes.vocab_size, embedding_dim=sizes.embedding_dim,
                         hidden_size=sizes.hidden_size, num_layers=sizes.num_layers,
                         dropout=0.0)
    model = CharLSTM(config)
    hidden = config.hidden_size

    def reorder(array: np.ndarray) -> np.ndarray:  # i, o, f, c -> i, f, c(g), o
        i, o, f, c = np.split(array, 4, axis=0)
        return np.concatenate([i, f, c, o], axis=0)

    state: dict[str, torch.Tensor] = {}
    gather = next(n for n in graph.node if n.op_type == "Gather")
    state["embedding.weight"] = torch.from_numpy(init[gather.input[0]].copy())
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    for layer, node in enumerate(lstms):
        w, r, b = (init[name][0] for name in node.input[1:4])
        state[f"lstm.weight_ih_l{layer}"] = torch.from_numpy(reorder(w).copy())
        state[f"lstm.weight_hh_l{layer}"] = torch.from_numpy(reorder(r).copy())
        state[f"lstm.bias_ih_l{layer}"] = torch.from_numpy(reorder(b[: 4 * hidden]).copy())
        state[f"lstm.bias_hh_l{layer}"] = torch.from_numpy(reorder(b[4 * hidden :]).copy())
    matmul = next(n for n in graph.node if n.op_type == "MatMul" and n.input[1] in init)
    add = next(n for n in graph.node if n.op_type == "Add" and n.output[0] == LOGITS)
    bias = next(name for name in add.input if name in init)
    state["head.weight"] = torch.from_numpy(init[matmul.input[1]].T.copy())
    state["head.bias"] = torch.from_numpy(init[bias].copy())
    model.load_state_dict(state)
    return model.eval()


def sdk_engine(model: bard_sdk.Model) -> Engine:
    def run(prompts: np.ndarray, new: int) -> np.ndarray:
        texts = [model.vocab.decode(row) for row in prompts]
        out = model.generate(texts, new, temperature=0)
        return np.array([model.encode(t) for t in out])
    return run


def bare_ort_engine(path: Path, threads: int | None) -> Engine:
    """The floor: InferenceSession.run per step, argmax in numpy, nothing else."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    layers, _, hidden = session.get_inputs()[1].shape

    def run(prompts: np.ndarray, new: int) -> np.ndarray:
        state = np.zeros((layers, prompts.shape[0], hidden), np.float32)
        logits, h, c = session.run(None, {TOKENS: prompts, H0: state, C0: state})
        out = np.empty((prompts.shape[0], new), np.int64)
        for t in range(new):
            out[:, t] = logits[:, -1].argmax(axis=1)
            if t + 1 < new:
                logits, h, c = session.run(None, {TOKENS: out[:, t : t + 1], H0: h, C0: c})
        return out
    return run


def torch_engine(model: CharLSTM) -> Engine:
    """PyTorch eager, stateful, inference mode, on the model's device (ids come back to the
    host at the end, which also waits for a GPU to finish)."""
    device = next(model.parameters()).device

    def run(prompts: np.ndarray, new: int) -> np.ndarray:
        out = torch.empty((prompts.shape[0], new), dtype=torch.long, device=device)
        with torch.inference_mode():
            logits, state = model(torch.from_numpy(prompts).to(device))
            for t in range(new):
                out[:, t] = logits[:, -1].argmax(dim=1)
                if t + 1 < new:
                    logits, state = model(out[:, t : t + 1], state)
        return out.cpu().numpy()
    return run


def tutorial_engine(model: CharLSTM) -> Engine:
    """The tutorial's predict(): every character re-feeds the last 32 from a zero state."""
    def run(prompts: np.ndarray, new: int) -> np.ndarray:
        text = torch.from_numpy(prompts)
        with torch.inference_mode():
            for _ in range(new):
                logits, _ = model(text[:, -TUTORIAL_WINDOW:])
                text = torch.cat([text, logits[:, -1].argmax(dim=1, keepdim=True)], dim=1)
        return text[:, prompts.shape[1] :].numpy()
    return run
