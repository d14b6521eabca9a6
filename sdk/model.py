"""`Model`: a loaded artifact; generate, stream, score, and open stateful sessions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from .arguments import describe, integer, real, string
from .beam import beam_search
from .decoding import Generator, LogitsProcessor, RowSettings
from .errors import ArtifactError, InvalidArgumentError
from .generation import PADDING_ID, Batch, prefill
from .manifest import Manifest, read_manifest, read_model_bytes
from .onnx_scan import check_self_contained
from .runtime import (
    MODEL_ERRORS,
    Runner,
    ThreadSettings,
    create_session,
    first_line,
    make_runner,
)
from .sampling import SamplingParams, row_keys
from .scoring import Score, Scorer
from .vocab import OnUnknown, Vocabulary

if TYPE_CHECKING:
    from .session import Session

PRIME_CHARACTER = "\n"  # what an empty prompt starts from (see Model.start_ids)
# The most characters one call may generate per row: about a day at batch 1 on a CPU, and a
# 1 GB string. Larger values are surely a mistake (10**12 once meant a MemoryError); for
# "until the stop string", pass a large limit such as 10**8: only what is produced is kept.
MAX_NEW_CHARS = 10**9
SEED_LIMIT = 2**64  # seeds are 64-bit: 0 <= seed < 2**64
MAX_BEAMS = 256


def check_prompts(prompt: str | Sequence[str]) -> tuple[list[str], bool]:
    """Normalise a prompt or list of prompts; returns (prompts, was_single)."""
    if isinstance(prompt, str):
        return [prompt], True
    if not isinstance(prompt, (list, tuple)):
        raise InvalidArgumentError(
            f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
    if not prompt:
        raise InvalidArgumentError("prompt list is empty")
    bad = [i for i, p in enumerate(prompt) if not isinstance(p, str)]
    if bad:
        raise InvalidArgumentError(f"prompt list must hold strings only; item {bad[0]} is "
                                   f"{type(prompt[bad[0]]).__name__}")
    return list(prompt), False


def check_seed(seed: object) -> int | None:
    """None (fresh entropy) or an integer in [0, 2**64), Python or numpy."""
    if seed is None:
        return None
    return integer(seed, "seed", minimum=0, maximum=SEED_LIMIT - 1)


def check_seeds(seed: int | Sequence[int] | None, rows: int) -> list[int | None]:
    """One seed per row: a list gives them; one int seeds row i with seed + i."""
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = [check_seed(s) for s in list(seed)]
        if len(seeds) != rows or any(s is None for s in seeds):
            raise InvalidArgumentError(f"got {len(seeds)} seeds for {rows} prompts; pass one "
                                       "integer per prompt")
        return seeds
    first = check_seed(seed)
    if first is None:
        return [None] * rows
    if first + rows > SEED_LIMIT:
        raise InvalidArgumentError(f"seed + {rows - 1} (one per row) must stay below 2**64")
    return [first + i for i in range(rows)]


def check_max_new(max_new_chars: int) -> int:
    return integer(max_new_chars, "max_new_chars", minimum=0, maximum=MAX_NEW_CHARS)


class Model:
    """A bard artifact on an onnxruntime session. Safe to share between threads: calls keep
    their state in locals, and `InferenceSession.run` is thread-safe."""

    def __init__(self, directory: Path, *, device: str = "auto", variant: str = "fp32",
                 threads: int | None = None, spin: bool = True) -> None:
        if not isinstance(variant, str):
            raise InvalidArgumentError(f"variant must be a string, got {describe(variant)}")
        self.manifest: Manifest = read_manifest(directory)
        data = read_model_bytes(self.manifest, variant)
        check_self_contained(data)
        if variant == "int8" and device == "auto":
            device = "cpu"  # DynamicQuantizeLSTM is a CPU kernel
        self._ort_session, self.device = create_session(data, device,
                                                            ThreadSettings(threads, spin))
        self.variant = variant
        self.vocab = Vocabulary(self.manifest.vocabulary)
        self._check_graph()
        self._runner: Runner = make_runner(self._ort_session, self.device)
        # The empty-prompt rule: an empty prompt starts from a newline, the way a speech starts
        # in the training text; a vocabulary without one refuses empty prompts (start_ids).
        self.prime_id: int | None = self.vocab.index.get(PRIME_CHARACTER)
        self._probe()

    def _check_graph(self) -> None:
        inputs = [i.name for i in self._ort_session.get_inputs()]
        outputs = [o.name for o in self._ort_session.get_outputs()]
        if inputs != ["tokens", "h0", "c0"] or outputs != ["logits", "hn", "cn"]:
            raise ArtifactError(f"model graph has inputs {inputs} and outputs {outputs}; "
                                "expected tokens, h0, c0 -> logits, hn, cn")
        vocab_dim = self._ort_session.get_outputs()[0].shape[-1]
        if vocab_dim != len(self.vocab):
            raise ArtifactError(f"model graph predicts {vocab_dim} characters but the manifest "
                                f"vocabulary has {len(self.vocab)}")
        state_shape = self._ort_session.get_inputs()[1].shape
        expected = [self.manifest.num_layers, self.manifest.hidden_size]
        if [state_shape[0], state_shape[2]] != expected:
            raise ArtifactError(f"model graph state shape {state_shape} disagrees with the "
                                f"manifest (layers, hidden) = {expected}")

    def _probe(self) -> None:
        """One tiny run (2 rows, 2 characters, one padded): the graph's real outputs must have
        the shapes and dtype the manifest declares, and be finite. A graph may declare one
        shape and emit another; better to find out here than at generate time."""
        layers, hidden, vocab = (self.manifest.num_layers, self.manifest.hidden_size,
                                 len(self.vocab))
        first = self.prime_id if self.prime_id is not None else 0
        tokens = np.array([[first] * 2, [first, PADDING_ID]], dtype=np.int64)
        try:
            logits, state = self._runner.step(tokens, self._runner.state(*self.zero_state(2)))
            h, c = state.to_numpy()
        except MODEL_ERRORS as err:
            raise ArtifactError(f"model graph fails on a first character: "
                                f"{first_line(err)}") from None
        expected = {"logits": (2, 2, vocab), "hn": (layers, 2, hidden), "cn": (layers, 2, hidden)}
        for name, array in (("logits", logits), ("hn", h), ("cn", c)):
            if array.shape != expected[name] or array.dtype != np.float32:
                raise ArtifactError(
                    f"model graph emits {name} {array.dtype} {list(array.shape)} for 2 rows of 2 "
                    f"characters; the manifest declares float32 {list(expected[name])}")
            if not np.isfinite(array).all():
                raise ArtifactError(f"model graph emits non-finite {name}")

    def __repr__(self) -> str:
        return (f"Model({self.manifest.name!r}, device={self.device!r}, "
                f"variant={self.variant!r}, vocab={len(self.vocab)})")

    # ------------------------------------------------------------------ building blocks

    def forward(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One raw call of the graph, numpy in and out: ids [batch, time] (-1 pads the end of
        a row) and the state [layers, batch, hidden] -> logits [batch, time, vocab], h, c.
        For parity checks and experiments; generation keeps the state on the device."""
        logits, state = self._runner.step(np.asarray(tokens, dtype=np.int64),
                                          self._runner.state(h, c))
        h_out, c_out = state.to_numpy()
        return logits, h_out, c_out

    def with_runner(self, wrap: Callable[[Runner], Runner]) -> Model:
        """A view of this model whose graph calls go through `wrap(runner)`: the seam for
        counting, timing or injecting failures (tests, profilers). The original is unchanged.
        A runner has `state(h, c) -> State` and `step(tokens, state) -> (logits, State)`."""
        view = copy.copy(self)
        view._runner = wrap(self._runner)
        return view

    def zero_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.manifest.num_layers, rows, self.manifest.hidden_size)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray:
        return self.vocab.encode(text, on_unknown, replacement)

    def start_ids(self) -> np.ndarray:
        """What an empty prompt (or one emptied by on_unknown='skip') is fed as: a newline,
        from the zero state. A model whose vocabulary has no newline has nothing that marks
        the start of a text, and refuses empty prompts rather than guess."""
        if self.prime_id is None:
            raise InvalidArgumentError(
                "this model's vocabulary has no newline, which an empty prompt starts from: "
                "give a prompt of at least one character of the vocabulary")
        return np.array([self.prime_id], np.int64)

    def _prefill_prompts(self, prompts: list[str], on_unknown: OnUnknown,
                         replacement: str | None) -> Batch:
        """Empty prompts (or prompts emptied by on_unknown='skip') start from the zero state
        primed with a newline, the way a speech starts in the training text (start_ids)."""
        ids = [self.encode(p, on_unknown, replacement) for p in prompts]
        ids = [i if len(i) else self.start_ids() for i in ids]
        return prefill(self._runner, ids, self._runner.state(*self.zero_state(len(ids))))

    def _stops(self, stop: str | Sequence[str] | None) -> list[np.ndarray]:
        if stop is None:
            return []
        if not isinstance(stop, (str, list, tuple)):
            raise InvalidArgumentError(
                f"stop must be a string or a list of strings, got {type(stop).__name__}")
        stops = [stop] if isinstance(stop, str) else list(stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise InvalidArgumentError(
                f"stop must be a non-empty string or a list of them, got {describe(stop)}")
        for s in stops:  # it could never be generated: say so rather than never stop
            unknown = sorted({ch for ch in s if ch not in self.vocab})
            if unknown:
                raise InvalidArgumentError(
                    f"stop string {describe(s)} can never occur: "
                    f"{', '.join(map(repr, unknown[:10]))} not in the model's vocabulary")
        return [self.vocab.encode(s) for s in stops]

    # ------------------------------------------------------------------ public API

    def _settings(self, rows: int, max_new_chars: object, temperature: object, top_k: object,
                  top_p: object, stop: str | Sequence[str] | None,
                  seed: int | Sequence[int] | None) -> list[RowSettings]:
        """Every option checked once, before any work: one RowSettings per row."""
        max_new = check_max_new(max_new_chars)
        params = SamplingParams.checked(temperature, top_k, top_p, len(self.vocab))
        keys = row_keys(check_seeds(seed, rows))
        stops = tuple(self._stops(stop))
        return [RowSettings(params, key, max_new, stops) for key in keys]

    def generator(self, prompt: str | Sequence[str], *, max_new_chars: int = 200,
                  temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, stop: str | Sequence[str] | None = None,
                  seed: int | Sequence[int] | None = None,
                  logits_processors: Sequence[LogitsProcessor] = (),
                  on_unknown: OnUnknown = "error", replacement: str | None = None
                  ) -> Generator:
        """A step loop over a batch of prompts (see `Generator`); the prompts are read now.

        `logits_processors` are `(step, ids, logits) -> logits` callables applied before each
        sample (e.g. `bard_sdk.RepetitionPenalty`, `bard_sdk.BanCharacters`).
        """
        prompts, _ = check_prompts(prompt)
        settings = self._settings(len(prompts), max_new_chars, temperature, top_k, top_p,
                                  stop, seed)
        processors = check_processors(logits_processors)
        batch = self._prefill_prompts(prompts, on_unknown, replacement)
        return Generator(self.vocab.chars, batch, self._runner, settings, processors,
                         encode=self.encode)

    @overload
    def generate(self, prompt: str, max_new_chars: int = ..., *, temperature: float = ...,
                 top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 logits_processors: Sequence[LogitsProcessor] = ..., num_beams: int = ...,
                 length_penalty: float = ..., on_unknown: OnUnknown = ...,
                 replacement: str | None = ...) -> str: ...

    @overload
    def generate(self, prompt: Sequence[str], max_new_chars: int = ..., *,
                 temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 logits_processors: Sequence[LogitsProcessor] = ..., num_beams: int = ...,
                 length_penalty: float = ..., on_unknown: OnUnknown = ...,
                 replacement: str | None = ...) -> list[str]: ...

    def generate(self, prompt: str | Sequence[str], max_new_chars: int = 200, *,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
                 logits_processors: Sequence[LogitsProcessor] = (), num_beams: int = 1,
                 length_penalty: float = 1.0, on_unknown: OnUnknown = "error",
                 replacement: str | None = None) -> str | list[str]:
        """Continue a prompt (str -> str) or a batch of prompts (list -> list).

        temperature=0 is greedy. A row ends after `max_new_chars` characters or right after
        one of the `stop` strings (which is included). With a list of prompts, `seed` may be
        a list (one per row); row i then equals generating prompt i alone with seed[i].
        `num_beams` > 1 searches for the most likely continuation instead of sampling (beam
        search; a finished beam is ranked by log-likelihood / length ** length_penalty).
        """
        prompts, single = check_prompts(prompt)
        beams = integer(num_beams, "num_beams", minimum=1, maximum=MAX_BEAMS)
        if beams > 1:
            texts = self._beam_search(prompts, max_new_chars, beams, length_penalty, stop,
                                      temperature, top_k, top_p, seed, logits_processors,
                                      on_unknown, replacement)
        else:
            gen = self.generator(prompts, max_new_chars=max_new_chars,
                                 temperature=temperature, top_k=top_k, top_p=top_p, stop=stop,
                                 seed=seed, logits_processors=logits_processors,
                                 on_unknown=on_unknown, replacement=replacement)
            while not gen.done:
                gen.step()
            texts = gen.texts
        return texts[0] if single else texts

    def _beam_search(self, prompts: list[str], max_new_chars: object, beams: int,
                     length_penalty: object, stop: str | Sequence[str] | None,
                     temperature: object, top_k: object, top_p: object, seed: object,
                     processors: object, on_unknown: OnUnknown,
                     replacement: str | None) -> list[str]:
        sampling = {"temperature": temperature != 1.0, "top_k": top_k is not None,
                    "top_p": top_p is not None, "seed": seed is not None,
                    "logits_processors": bool(processors)}
        given = [name for name, used in sampling.items() if used]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} do(es) not apply to beam search "
                                       "(num_beams > 1), which does not sample")
        max_new = check_max_new(max_new_chars)
        penalty = real(length_penalty, "length_penalty", minimum=-10.0, maximum=10.0)
        stops = self._stops(stop)
        if max_new == 0:
            return [""] * len(prompts)
        batch = self._prefill_prompts(prompts, on_unknown, replacement)
        found = beam_search(self._runner, batch, max_new, beams, penalty, stops)
        return [self.vocab.decode(list(ids)) for ids, _ in found]

    @overload
    def stream(self, prompt: str, max_new_chars: int = ..., *, temperature: float = ...,
               top_k: int | None = ..., top_p: float | None = ...,
               stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
               logits_processors: Sequence[LogitsProcessor] = ...,
               on_unknown: OnUnknown = ..., replacement: str | None = ...) -> Iterator[str]: ...

    @overload
    def stream(self, prompt: Sequence[str], max_new_chars: int = ..., *,
               temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
               stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
               logits_processors: Sequence[LogitsProcessor] = ...,
               on_unknown: OnUnknown = ..., replacement: str | None = ...
               ) -> Iterator[tuple[int, str]]: ...

    def stream(self, prompt: str | Sequence[str], max_new_chars: int = 200, *,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
               logits_processors: Sequence[LogitsProcessor] = (),
               on_unknown: OnUnknown = "error", replacement: str | None = None
               ) -> Iterator[str] | Iterator[tuple[int, str]]:
        """Like generate, but yields text as it is made: characters for one prompt,
        (row, character) pairs for a list of prompts. Arguments are checked at the call."""
        single = isinstance(prompt, str)
        gen = self.generator(prompt, max_new_chars=max_new_chars, temperature=temperature,
                             top_k=top_k, top_p=top_p, stop=stop, seed=seed,
                             logits_processors=logits_processors, on_unknown=on_unknown,
                             replacement=replacement)
        return _stream_single(gen, self.vocab.chars) if single else _stream_rows(
            gen, self.vocab.chars)

    def score(self, text: str, *, on_unknown: OnUnknown = "error",
              replacement: str | None = None) -> Score:
        """Total log-likelihood of `text` from the zero state, in one stream (state carried).
        For a text too large to hold, `bard_sdk.score_stream` reads it from a file."""
        scorer = Scorer(self)
        scorer.feed(self.encode(string(text, "text"), on_unknown, replacement))
        return scorer.score

    def session(self, prompt: str = "", *, on_unknown: OnUnknown = "error",
                replacement: str | None = None) -> Session:
        """A stateful continuation: feed text, generate, fork, export and restore the state."""
        from .session import Session

        prompt = string(prompt, "prompt")
        session = Session(self, *self.zero_state(1), None)
        if prompt:
            session.feed(prompt, on_unknown=on_unknown, replacement=replacement)
        return session


def _stream_single(gen: Generator, chars: Sequence[str]) -> Iterator[str]:
    while not gen.done:
        _, ids = gen.step()
        yield chars[int(ids[0])]


def _stream_rows(gen: Generator, chars: Sequence[str]) -> Iterator[tuple[int, str]]:
    while not gen.done:
        rows, ids = gen.step()
        yield from ((int(r), chars[int(i)]) for r, i in zip(rows, ids))


def check_processors(processors: object) -> list[LogitsProcessor]:
    if not isinstance(processors, (list, tuple)) or not all(callable(p) for p in processors):
        raise InvalidArgumentError("logits_processors must be a list of callables "
                                   "(step, ids, logits) -> logits")
    return list(processors)
