"""`Model`: a loaded artifact; generate, stream, score, and open stateful sessions."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from .errors import ArtifactError
from .generation import Batch, decode, prefill
from .manifest import Manifest, read_manifest, read_model_bytes
from .onnx_scan import check_self_contained
from .runtime import BoundRunner, HostRunner, create_session, make_runner
from .sampling import SamplingParams, row_keys
from .vocab import OnUnknown, Vocabulary

if TYPE_CHECKING:
    from .session import Session

SCORE_CHUNK = 4096


@dataclass(frozen=True)
class Score:
    """Log-likelihood of a text under the model, predicting each character from the ones
    before it (the first character has no prediction)."""

    total_nats: float
    characters: int

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.characters if self.characters else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def check_prompts(prompt: str | Sequence[str]) -> tuple[list[str], bool]:
    """Normalise a prompt or list of prompts; returns (prompts, was_single)."""
    if isinstance(prompt, str):
        return [prompt], True
    if not isinstance(prompt, (list, tuple)):
        raise ValueError(
            f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt list is empty")
    bad = [i for i, p in enumerate(prompt) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompt list must hold strings only; item {bad[0]} is "
                         f"{type(prompt[bad[0]]).__name__}")
    return list(prompt), False


def check_seeds(seed: int | Sequence[int] | None, rows: int) -> list[int | None]:
    """One seed per row: a list gives them; one int seeds row i with seed + i."""
    if seed is None:
        return [None] * rows
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seed must be an int or a list of ints, got {seed!r}")
    if isinstance(seed, (list, tuple)):
        if len(seeds) != rows:
            raise ValueError(f"got {len(seeds)} seeds for {rows} prompts")
        return list(seeds)
    return [seeds[0] + i for i in range(rows)]


def check_max_new(max_new_chars: int) -> None:
    if isinstance(max_new_chars, bool) or not isinstance(max_new_chars, int) or max_new_chars < 0:
        raise ValueError(f"max_new_chars must be an integer >= 0, got {max_new_chars!r}")


class Model:
    """A bard artifact on an onnxruntime session. Safe to share between threads: calls keep
    their state in locals, and `InferenceSession.run` is thread-safe."""

    def __init__(self, directory: Path, *, device: str = "auto", variant: str = "fp32",
                 threads: int | None = None) -> None:
        self.manifest: Manifest = read_manifest(directory)
        data = read_model_bytes(self.manifest, variant)
        check_self_contained(data)
        if variant == "int8" and device == "auto":
            device = "cpu"  # DynamicQuantizeLSTM is a CPU kernel
        self.ort_session, self.device = create_session(data, device, threads)
        self.variant = variant
        self.vocab = Vocabulary(self.manifest.vocabulary)
        self._check_graph()
        self.runner: HostRunner | BoundRunner = make_runner(self.ort_session, self.device)
        self.prime_id = self.vocab.index.get("\n", 0)

    def _check_graph(self) -> None:
        inputs = [i.name for i in self.ort_session.get_inputs()]
        outputs = [o.name for o in self.ort_session.get_outputs()]
        if inputs != ["tokens", "h0", "c0"] or outputs != ["logits", "hn", "cn"]:
            raise ArtifactError(f"model graph has inputs {inputs} and outputs {outputs}; "
                                "expected tokens, h0, c0 -> logits, hn, cn")
        vocab_dim = self.ort_session.get_outputs()[0].shape[-1]
        if vocab_dim != len(self.vocab):
            raise ArtifactError(f"model graph predicts {vocab_dim} characters but the manifest "
                                f"vocabulary has {len(self.vocab)}")
        state_shape = self.ort_session.get_inputs()[1].shape
        expected = [self.manifest.num_layers, self.manifest.hidden_size]
        if [state_shape[0], state_shape[2]] != expected:
            raise ArtifactError(f"model graph state shape {state_shape} disagrees with the "
                                f"manifest (layers, hidden) = {expected}")

    def __repr__(self) -> str:
        return (f"Model({self.manifest.name!r}, device={self.device!r}, "
                f"variant={self.variant!r}, vocab={len(self.vocab)})")

    # ------------------------------------------------------------------ building blocks

    def zero_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.manifest.num_layers, rows, self.manifest.hidden_size)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray:
        return self.vocab.encode(text, on_unknown, replacement)

    def _prefill_prompts(self, prompts: list[str], on_unknown: OnUnknown,
                         replacement: str | None) -> Batch:
        """Empty prompts (or prompts emptied by on_unknown='skip') start from the zero state
        primed with a newline, the way a speech starts in the training text."""
        ids = [self.encode(p, on_unknown, replacement) for p in prompts]
        ids = [i if len(i) else np.array([self.prime_id], np.int64) for i in ids]
        return prefill(self.runner, ids, self.runner.state(*self.zero_state(len(ids))))

    def _stops(self, stop: str | Sequence[str] | None) -> list[np.ndarray]:
        if stop is None:
            return []
        stops = [stop] if isinstance(stop, str) else list(stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
        # A stop string with unknown characters can never be generated: it never matches.
        return [self.vocab.encode(s) for s in stops if all(ch in self.vocab for ch in s)]

    # ------------------------------------------------------------------ public API

    def _events(self, prompt: str | Sequence[str], max_new_chars: int, temperature: float,
                top_k: int | None, top_p: float | None, stop: str | Sequence[str] | None,
                seed: int | Sequence[int] | None, on_unknown: OnUnknown,
                replacement: str | None) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]],
                                                  int, bool]:
        prompts, single = check_prompts(prompt)
        check_max_new(max_new_chars)
        params = SamplingParams(temperature, top_k, top_p)
        params.validate(len(self.vocab))
        keys = row_keys(check_seeds(seed, len(prompts)))
        stops = self._stops(stop)
        if max_new_chars == 0:
            return iter(()), len(prompts), single
        batch = self._prefill_prompts(prompts, on_unknown, replacement)
        return decode(self.runner, batch, max_new_chars, params, keys, stops), len(prompts), single

    @overload
    def generate(self, prompt: str, max_new_chars: int = ..., temperature: float = ...,
                 top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 on_unknown: OnUnknown = ..., replacement: str | None = ...) -> str: ...

    @overload
    def generate(self, prompt: Sequence[str], max_new_chars: int = ..., temperature: float = ...,
                 top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 on_unknown: OnUnknown = ..., replacement: str | None = ...) -> list[str]: ...

    def generate(self, prompt: str | Sequence[str], max_new_chars: int = 200,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
                 on_unknown: OnUnknown = "error", replacement: str | None = None
                 ) -> str | list[str]:
        """Continue a prompt (str -> str) or a batch of prompts (list -> list).

        temperature=0 is greedy. A row ends after `max_new_chars` characters or right after
        one of the `stop` strings (which is included). With a list of prompts, `seed` may be
        a list (one per row); row i then equals generating prompt i alone with seed[i].
        """
        events, rows, single = self._events(prompt, max_new_chars, temperature, top_k, top_p,
                                            stop, seed, on_unknown, replacement)
        out = np.full((rows, max_new_chars), -1, dtype=np.int64)
        lengths = np.zeros(rows, dtype=np.int64)
        for step, (active, ids) in enumerate(events):  # active rows all have `step` ids
            out[active, step] = ids
            lengths[active] = step + 1
        texts = [self.vocab.decode(out[r, : lengths[r]]) for r in range(rows)]
        return texts[0] if single else texts

    def stream(self, prompt: str | Sequence[str], max_new_chars: int = 200,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
               on_unknown: OnUnknown = "error", replacement: str | None = None
               ) -> Iterator[str] | Iterator[tuple[int, str]]:
        """Like generate, but yields text as it is made: characters for one prompt,
        (row, character) pairs for a list of prompts. Arguments are checked at the call."""
        events, _, single = self._events(prompt, max_new_chars, temperature, top_k, top_p,
                                         stop, seed, on_unknown, replacement)
        chars = self.vocab.chars
        if single:
            return (chars[int(ids[0])] for _, ids in events)
        return ((int(r), chars[int(i)]) for rows, ids in events for r, i in zip(rows, ids))

    def score(self, text: str, on_unknown: OnUnknown = "error",
              replacement: str | None = None) -> Score:
        """Total log-likelihood of `text` from the zero state, in one stream (state carried)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        ids = self.encode(text, on_unknown, replacement)
        state = self.runner.state(*self.zero_state(1))
        total = 0.0
        for start in range(0, len(ids) - 1, SCORE_CHUNK):
            chunk = ids[start : start + SCORE_CHUNK + 1]
            logits, state = self.runner.step(chunk[None, :-1], state)
            z = logits[0].astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            total -= float(log_probs[np.arange(len(chunk) - 1), chunk[1:]].sum())
        return Score(total, max(len(ids) - 1, 0))

    def session(self, prompt: str = "", on_unknown: OnUnknown = "error",
                replacement: str | None = None) -> Session:
        """A stateful continuation: feed text, generate, fork, export and restore the state."""
        from .session import Session

        session = Session(self, *self.zero_state(1), None)
        if prompt:
            session.feed(prompt, on_unknown=on_unknown, replacement=replacement)
        return session
