"""The parity gate: PyTorch and the SDK's own onnxruntime path must agree before we ship.

Each check returns a measured number; `ParityError` names the check that failed. The ONNX side
runs through `bard_sdk` (its loader, runner and generation loop), not a parallel copy. Every
comparison is written `not (diff <= tolerance)`, so a NaN fails it instead of passing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import bard_sdk
import numpy as np
import torch
from bard.training.model import CharLSTM

LOGITS_TOL = 1e-4
STATE_TOL = 1e-5
SHAPES = [(batch, time) for batch in (1, 3) for time in (1, 17, 200)]


class ParityError(RuntimeError):
    """PyTorch and ONNX disagree: the artifact is not written."""


@dataclass
class ParityReport:
    max_logits_diff: float = 0.0
    max_state_diff: float = 0.0
    stepwise_max_diff: float = 0.0
    greedy_chars: int = 0
    details: list[str] = field(default_factory=list)


def torch_step(model: CharLSTM, tokens: np.ndarray, h: np.ndarray,
               c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One call of the PyTorch model in its own precision; results as float32 arrays."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        logits, (hn, cn) = model(torch.from_numpy(tokens), (torch.from_numpy(h).to(dtype),
                                                            torch.from_numpy(c).to(dtype)))
    return (logits.float().numpy(), hn.float().numpy(), cn.float().numpy())


def torch_greedy(model: CharLSTM, prompt_ids: np.ndarray, count: int) -> list[int]:
    h = np.zeros((model.config.num_layers, 1, model.config.hidden_size), np.float32)
    logits, h, c = torch_step(model, prompt_ids[None, :], h, h.copy())
    out: list[int] = []
    for _ in range(count):
        out.append(int(logits[0, -1].argmax()))
        logits, h, c = torch_step(model, np.array([[out[-1]]]), h, c)
    return out


def check_parity(model: CharLSTM, sdk_model: bard_sdk.Model, prompt: str,
                 seed: int = 0) -> ParityReport:
    """Run every check; raise ParityError on the first violation.

    The reference is the PyTorch model in float64: the same weights computed (almost)
    exactly, so the gate measures the ONNX model's own float32 error. A float32 PyTorch
    reference adds its own rounding, and over 200 steps the cell state (which grows to
    magnitudes near 10) drifts by about 1e-5 from rounding alone.
    """
    model = copy.deepcopy(model).double().eval()
    report = ParityReport()
    rng = np.random.default_rng(seed)
    layers, hidden, vocab = (model.config.num_layers, model.config.hidden_size,
                             model.config.vocab_size)

    for batch, time in SHAPES:
        tokens = rng.integers(0, vocab, (batch, time), dtype=np.int64)
        h0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.5
        c0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.5
        t_logits, t_h, t_c = torch_step(model, tokens, h0, c0)
        o_logits, o_h, o_c = sdk_model.forward(tokens, h0, c0)
        logits_diff = float(np.abs(t_logits - o_logits).max())
        state_diff = float(np.max([np.abs(t_h - o_h).max(), np.abs(t_c - o_c).max()]))
        report.max_logits_diff = float(np.max([report.max_logits_diff, logits_diff]))
        report.max_state_diff = float(np.max([report.max_state_diff, state_diff]))
        report.details.append(f"batch {batch} time {time}: logits {logits_diff:.2e}, "
                              f"state {state_diff:.2e}")
        if not (logits_diff <= LOGITS_TOL and state_diff <= STATE_TOL):  # NaN fails too
            raise ParityError(f"batch {batch}, time {time}: max |logits diff| {logits_diff:.2e} "
                              f"(limit {LOGITS_TOL}), max |state diff| {state_diff:.2e} "
                              f"(limit {STATE_TOL})")

    tokens = rng.integers(0, vocab, (1, 100), dtype=np.int64)
    zeros = np.zeros((layers, 1, hidden), np.float32)
    whole_logits, whole_h, whole_c = sdk_model.forward(tokens, zeros, zeros)
    h, c = zeros, zeros
    steps = []
    for t in range(tokens.shape[1]):
        logits, h, c = sdk_model.forward(tokens[:, t : t + 1], h, c)
        steps.append(logits)
    stepwise = np.concatenate(steps, axis=1)
    diffs = [np.abs(stepwise - whole_logits).max(), np.abs(h - whole_h).max(),
             np.abs(c - whole_c).max()]
    diff = float(np.max(diffs))  # np.max keeps a NaN; Python's max may drop it
    report.stepwise_max_diff = diff
    if not diff <= LOGITS_TOL:
        raise ParityError(f"feeding 100 characters one call at a time differs from one call "
                          f"by {diff:.2e}")

    prompt_ids = sdk_model.encode(prompt)
    expected = sdk_model.vocab.decode(torch_greedy(model, prompt_ids, 200))
    produced = sdk_model.generate(prompt, 200, temperature=0)
    if produced != expected:
        first = next((i for i, (a, b) in enumerate(zip(produced, expected)) if a != b),
                     min(len(produced), len(expected)))
        raise ParityError(f"greedy generation differs from PyTorch at character {first}: "
                          f"{produced[first:first + 20]!r} vs {expected[first:first + 20]!r}")
    report.greedy_chars = len(produced)
    return report
