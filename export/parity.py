"""The parity gate: PyTorch and the SDK's own onnxruntime path must agree before we ship.

The reference is the PyTorch model in float64: the same weights computed (almost) exactly, so
the gate measures the exported float32 graph's own error. Each check compares a measured
difference with a bound of the form `atol + rtol * scale` (as `numpy.isclose` does), `scale`
being the largest magnitude of the reference values compared: float32 rounding is relative,
so a cell state that grows to 10 carries ten times the absolute error of one near 1. Every
comparison is written `not (diff <= limit)`, so a NaN fails it instead of passing.

Why these bounds (`python -m bard.bench.parity_study`, BENCHMARKS.md "Parity gate"): over 19
float32 models (1x16 to 2x256; the held-out books and users' shapes of text: 3,000
characters, tabs, a NUL, one long line, CRLF, a BOM, emoji; seeds 1, 2 and 1337) the worst
differences, as a fraction of the reference's largest magnitude, were 7.5e-7 for the logits
and 1.24e-6 for the state after 200 steps from a random state (float32's epsilon is 1.2e-7;
cell states reached magnitudes of 190). The old absolute state bound of 1e-5 refused 9 of the
19, whose logits agreed to 8e-6. `rtol = 1e-5` leaves 8x headroom above the worst model's
state and 13x above its logits, and still refuses, naming the check, every damage the tests
build: one weight moved by 1e-3, two gates swapped, a layer's biases dropped
(tests/export/test_parity_gate.py). The int8 variant is held to its own bound instead
(export.INT8_TOLERANCE: 0.01 nats per character on the validation split).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import bard_sdk
import numpy as np
import torch
from bard.training.model import CharLSTM

SHAPES = [(batch, time) for batch in (1, 3) for time in (1, 17, 200)]
GREEDY_CHARS = 200
STEPWISE_CHARS = 100


@dataclass(frozen=True)
class Bound:
    """`diff <= atol + rtol * scale`: absolute where values are small, relative where large."""

    atol: float
    rtol: float

    def limit(self, scale: float) -> float:
        return self.atol + self.rtol * scale

    def __str__(self) -> str:
        return f"{self.atol:g} + {self.rtol:g} x max|reference|"


# One float32 bound for both: 8x (state) and 13x (logits) the worst measured relative error.
LOGITS = Bound(atol=1e-5, rtol=1e-5)
STATE = Bound(atol=1e-5, rtol=1e-5)
# One call over 100 characters against 100 calls of one: the same float32 kernels, so only
# the order of accumulation differs; the same bound as the logits.
STEPWISE = LOGITS

REFUSAL_ADVICE = (
    "The checkpoint's weights loaded and passed their sha256 check, and this gate allows 8x "
    "the float32 rounding measured over many models, so this is a bug in bard's export (or "
    "in onnxruntime {ort}), not a problem with your model: please report it with this "
    "message."
)


class ParityError(RuntimeError):
    """PyTorch and ONNX disagree: the artifact is not written."""


@dataclass
class Comparison:
    """One measured difference against its limit."""

    check: str
    diff: float
    scale: float
    bound: Bound

    @property
    def limit(self) -> float:
        return self.bound.limit(self.scale)

    @property
    def passed(self) -> bool:
        return bool(self.diff <= self.limit)  # NaN fails

    @property
    def fraction(self) -> float:
        """How much of its limit the difference uses (1.0 = at the limit)."""
        return self.diff / self.limit

    def describe(self) -> str:
        return (f"{self.check}: max |diff| {self.diff:.2e}, limit {self.limit:.2e} "
                f"({self.bound}, max|reference| {self.scale:.3g})")


@dataclass
class ParityReport:
    max_logits_diff: float = 0.0
    max_state_diff: float = 0.0
    stepwise_max_diff: float = 0.0
    greedy_chars: int = 0
    greedy_near_tie_at: int | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def worst_fraction(self) -> float:
        """The largest share of its limit any comparison used (NaN if any diff was NaN)."""
        return float(np.max([c.fraction for c in self.comparisons])) if self.comparisons else 0.0


def torch_step(model: CharLSTM, tokens: np.ndarray, h: np.ndarray,
               c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One call of the PyTorch model in its own precision; results as float64 arrays."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        logits, (hn, cn) = model(torch.from_numpy(tokens), (torch.from_numpy(h).to(dtype),
                                                            torch.from_numpy(c).to(dtype)))
    return (logits.double().numpy(), hn.double().numpy(), cn.double().numpy())


def torch_greedy(model: CharLSTM, prompt_ids: np.ndarray,
                 count: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy ids and the logits each was chosen from."""
    h = np.zeros((model.config.num_layers, 1, model.config.hidden_size), np.float32)
    logits, h, c = torch_step(model, prompt_ids[None, :], h, h.copy())
    out: list[int] = []
    seen: list[np.ndarray] = []
    for _ in range(count):
        seen.append(logits[0, -1])
        out.append(int(logits[0, -1].argmax()))
        logits, h, c = torch_step(model, np.array([[out[-1]]]), h, c)
    return out, seen


def max_abs_diff(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(max |a - b|, max |b|) over the pairs; np.max keeps a NaN where Python's max may not."""
    diff = float(np.max([np.abs(a - b).max() for a, b in pairs]))
    scale = float(np.max([np.abs(b).max() for _, b in pairs]))
    return diff, scale


def measure_parity(model: CharLSTM, sdk_model: bard_sdk.Model, prompt: str,
                   seed: int = 0) -> ParityReport:
    """Every figure the gate looks at, without judging them (the study and the gate share it)."""
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
        where = f"batch {batch}, time {time}"
        logits = Comparison(f"logits ({where})", *max_abs_diff([(o_logits, t_logits)]), LOGITS)
        state = Comparison(f"state h/c ({where})", *max_abs_diff([(o_h, t_h), (o_c, t_c)]),
                           STATE)
        report.comparisons += [logits, state]
        report.max_logits_diff = float(np.max([report.max_logits_diff, logits.diff]))
        report.max_state_diff = float(np.max([report.max_state_diff, state.diff]))
        report.details.append(f"{where}: logits {logits.diff:.2e}, state {state.diff:.2e}")

    tokens = rng.integers(0, vocab, (1, STEPWISE_CHARS), dtype=np.int64)
    zeros = np.zeros((layers, 1, hidden), np.float32)
    whole_logits, whole_h, whole_c = sdk_model.forward(tokens, zeros, zeros)
    h, c = zeros, zeros
    steps = []
    for t in range(tokens.shape[1]):
        logits_t, h, c = sdk_model.forward(tokens[:, t : t + 1], h, c)
        steps.append(logits_t)
    stepwise = Comparison(
        f"{STEPWISE_CHARS} characters fed one call at a time against one call",
        *max_abs_diff([(np.concatenate(steps, axis=1), whole_logits), (h, whole_h),
                       (c, whole_c)]), STEPWISE)
    report.comparisons.append(stepwise)
    report.stepwise_max_diff = stepwise.diff

    expected, chosen_from = torch_greedy(model, sdk_model.encode(prompt), GREEDY_CHARS)
    produced = sdk_model.encode(sdk_model.generate(prompt, GREEDY_CHARS, temperature=0))
    same = next((i for i, (a, b) in enumerate(zip(produced, expected)) if a != b),
                min(len(produced), len(expected)))
    report.greedy_chars = same
    if same < GREEDY_CHARS and same < len(produced):
        reference = chosen_from[same]
        gap = float(reference[expected[same]] - reference[produced[same]])
        if gap <= LOGITS.limit(float(np.abs(reference).max())):
            report.greedy_near_tie_at = same  # both choices are right within float32
    return report


def check_parity(model: CharLSTM, sdk_model: bard_sdk.Model, prompt: str,
                 seed: int = 0) -> ParityReport:
    """Run every check; raise ParityError naming the first one that failed."""
    report = measure_parity(model, sdk_model, prompt, seed)
    advice = REFUSAL_ADVICE.format(ort=_onnxruntime_version())
    for comparison in report.comparisons:
        if not comparison.passed:
            raise ParityError(f"PyTorch and the exported graph disagree: "
                              f"{comparison.describe()}. {advice}")
    if report.greedy_chars < GREEDY_CHARS and report.greedy_near_tie_at is None:
        raise ParityError(f"greedy generation differs from PyTorch at character "
                          f"{report.greedy_chars} of {GREEDY_CHARS} (not a near-tie of two "
                          f"characters' logits). {advice}")
    return report


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
