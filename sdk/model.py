"""`Model`: a loaded artifact; generate, stream, score, and open stateful sessions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from . import contract
from .arguments import describe, string
from .beam import beam_search
from .chat_template import ChatPrompt, ChatTemplate, chat_prompt
from .contract import PADDING_ID
from .decoding import Generator, LogitsProcessor
from .errors import ArtifactError, InvalidArgumentError
from .generation import Batch, prefill
from .manifest import Manifest, read_manifest, read_model_bytes
from .onnx_scan import check_self_contained
from .options import MAX_NEW_CHARS, GenerationOptions, check_prompts
from .penalties import PenaltyArguments
from .runtime import (
    MODEL_ERRORS,
    Runner,
    ThreadSettings,
    create_session,
    first_line,
    make_runner,
)
from .scoring import Score, Scorer
from .session import Session
from .vocab import OnUnknown, Vocabulary

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_CHAT_MAX_NEW_CHARS", "MAX_NEW_CHARS", "Model", "Score"]

# A reply usually ends at the template's turn boundary long before this; the bound is for a
# model that never writes one.
DEFAULT_CHAT_MAX_NEW_CHARS = 1000


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
        # The documented seam for graph calls (see `with_runner`): `state(h, c) -> State`
        # and `step(tokens, state) -> (logits, State)`.
        self.runner: Runner = make_runner(self._ort_session, self.device)
        self.prime_id = contract.prime_id(self.vocab.index)
        self._probe()

    def _check_graph(self) -> None:
        inputs = [i.name for i in self._ort_session.get_inputs()]
        outputs = [o.name for o in self._ort_session.get_outputs()]
        if tuple(inputs) != contract.INPUT_NAMES or tuple(outputs) != contract.OUTPUT_NAMES:
            raise ArtifactError(f"model graph has inputs {inputs} and outputs {outputs}; "
                                f"expected {', '.join(contract.INPUT_NAMES)} -> "
                                f"{', '.join(contract.OUTPUT_NAMES)}")
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
            logits, state = self.runner.step(tokens, self.runner.state(*self.zero_state(2)))
            h, c = state.to_numpy()
        except MODEL_ERRORS as err:
            raise ArtifactError(f"model graph fails on a first character: "
                                f"{first_line(err)}") from None
        state_shape = contract.state_shape(layers, 2, hidden)
        expected = {contract.LOGITS: (2, 2, vocab), contract.HN: state_shape,
                    contract.CN: state_shape}
        for name, array in zip(contract.OUTPUT_NAMES, (logits, h, c)):
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
        logits, state = self.runner.step(np.asarray(tokens, dtype=np.int64),
                                          self.runner.state(h, c))
        h_out, c_out = state.to_numpy()
        return logits, h_out, c_out

    def with_runner(self, wrap: Callable[[Runner], Runner]) -> Model:
        """A view of this model whose graph calls go through `wrap(runner)`: the seam for
        counting, timing or injecting failures (tests, profilers). The original is unchanged.
        A runner has `state(h, c) -> State` and `step(tokens, state) -> (logits, State)`."""
        view = copy.copy(self)
        view.runner = wrap(self.runner)
        return view

    def zero_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        return contract.zero_state(self.manifest.num_layers, rows, self.manifest.hidden_size)

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray:
        return self.vocab.encode(text, on_unknown, replacement)

    def prompt_ids(self, prompt: str, on_unknown: OnUnknown = "error",
                   replacement: str | None = None) -> np.ndarray:
        """The ids the model reads for `prompt`: its characters, or the prime character
        alone for an empty prompt (the contract's empty-prompt rule)."""
        ids = self.encode(string(prompt, "prompt"), on_unknown, replacement)
        return contract.prompt_ids(ids, self.prime_id)

    def _prefill_prompts(self, prompts: list[str], options: GenerationOptions
                         ) -> tuple[Batch, list[np.ndarray]]:
        """The prompts read (and the ids read for each)."""
        ids = [self.prompt_ids(p, options.on_unknown, options.replacement) for p in prompts]
        return prefill(self.runner, ids, self.runner.state(*self.zero_state(len(ids)))), ids

    # ------------------------------------------------------------------ public API

    def options(self, *, rows: int = 1, **arguments: object) -> GenerationOptions:
        """`GenerationOptions.checked` for this model's vocabulary: the keyword arguments of
        `generate` (besides the prompt), checked once."""
        return GenerationOptions.checked(self.vocab, rows=rows, **arguments)  # type: ignore[arg-type]

    def generator(self, prompt: str | Sequence[str], *, max_new_chars: int = 200,
                  temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, stop: str | Sequence[str] | None = None,
                  seed: int | Sequence[int] | None = None,
                  logits_processors: Sequence[LogitsProcessor] = (),
                  on_unknown: OnUnknown = "error", replacement: str | None = None,
                  **penalties: Unpack[PenaltyArguments]) -> Generator:
        """A step loop over a batch of prompts (see `Generator`); the prompts are read now.

        `logits_processors` are `(step, ids, logits) -> logits` callables applied before each
        sample (e.g. `bard_sdk.RepetitionPenalty`, `bard_sdk.BanCharacters`), before the
        penalties (`PenaltyArguments`: frequency_penalty, presence_penalty,
        repetition_penalty, min_p, logit_bias).
        """
        prompts, _ = check_prompts(prompt)
        options = self.options(rows=len(prompts), max_new_chars=max_new_chars,
                               temperature=temperature, top_k=top_k, top_p=top_p, stop=stop,
                               seed=seed, logits_processors=logits_processors,
                               on_unknown=on_unknown, replacement=replacement, **penalties)
        return self.generator_for(prompts, options)

    def generator_for(self, prompts: list[str], options: GenerationOptions) -> Generator:
        """`generator` with the prompts and options checked already."""
        batch, ids = self._prefill_prompts(prompts, options)
        return Generator(self.vocab.chars, batch, self.runner, options.row_settings(len(prompts)),
                         options.logits_processors, encode=self.encode, prompts=ids)

    @overload
    def generate(self, prompt: str, max_new_chars: int = ..., *, temperature: float = ...,
                 top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 logits_processors: Sequence[LogitsProcessor] = ..., num_beams: int = ...,
                 length_penalty: float = ..., on_unknown: OnUnknown = ...,
                 replacement: str | None = ...,
                 **penalties: Unpack[PenaltyArguments]) -> str: ...

    @overload
    def generate(self, prompt: Sequence[str], max_new_chars: int = ..., *,
                 temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
                 stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
                 logits_processors: Sequence[LogitsProcessor] = ..., num_beams: int = ...,
                 length_penalty: float = ..., on_unknown: OnUnknown = ...,
                 replacement: str | None = ...,
                 **penalties: Unpack[PenaltyArguments]) -> list[str]: ...

    def generate(self, prompt: str | Sequence[str], max_new_chars: int = 200, *,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
                 logits_processors: Sequence[LogitsProcessor] = (), num_beams: int = 1,
                 length_penalty: float = 1.0, on_unknown: OnUnknown = "error",
                 replacement: str | None = None, **penalties: Unpack[PenaltyArguments]
                 ) -> str | list[str]:
        """Continue a prompt (str -> str) or a batch of prompts (list -> list).

        temperature=0 is greedy. A row ends after `max_new_chars` characters or right after
        one of the `stop` strings (which is included). With a list of prompts, `seed` may be
        a list (one per row); row i then equals generating prompt i alone with seed[i].
        `num_beams` > 1 searches for the most likely continuation instead of sampling (beam
        search; a finished beam is ranked by log-likelihood / length ** length_penalty).
        The OpenAI/vLLM penalties (frequency_penalty, presence_penalty, repetition_penalty,
        min_p, logit_bias) are described at `bard_sdk.PenaltyArguments`.
        """
        prompts, single = check_prompts(prompt)
        options = self.options(rows=len(prompts), max_new_chars=max_new_chars,
                               temperature=temperature, top_k=top_k, top_p=top_p, stop=stop,
                               seed=seed, logits_processors=logits_processors,
                               num_beams=num_beams, length_penalty=length_penalty,
                               on_unknown=on_unknown, replacement=replacement, **penalties)
        texts = self.generate_checked(prompts, options)
        return texts[0] if single else texts

    def generate_checked(self, prompts: list[str], options: GenerationOptions) -> list[str]:
        """`generate` with the prompts and options checked already: one text per prompt."""
        if options.num_beams > 1:
            if options.max_new_chars == 0:
                return [""] * len(prompts)
            batch, _ = self._prefill_prompts(prompts, options)
            found = beam_search(self.runner, batch, options.max_new_chars, options.num_beams,
                                options.length_penalty, list(options.stop_ids))
            return [self.vocab.decode(list(ids)) for ids, _ in found]
        gen = self.generator_for(prompts, options)
        while not gen.done:
            gen.step()
        return gen.texts

    @overload
    def stream(self, prompt: str, max_new_chars: int = ..., *, temperature: float = ...,
               top_k: int | None = ..., top_p: float | None = ...,
               stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
               logits_processors: Sequence[LogitsProcessor] = ...,
               on_unknown: OnUnknown = ..., replacement: str | None = ...,
               **penalties: Unpack[PenaltyArguments]) -> Iterator[str]: ...

    @overload
    def stream(self, prompt: Sequence[str], max_new_chars: int = ..., *,
               temperature: float = ..., top_k: int | None = ..., top_p: float | None = ...,
               stop: str | Sequence[str] | None = ..., seed: int | Sequence[int] | None = ...,
               logits_processors: Sequence[LogitsProcessor] = ...,
               on_unknown: OnUnknown = ..., replacement: str | None = ...,
               **penalties: Unpack[PenaltyArguments]) -> Iterator[tuple[int, str]]: ...

    def stream(self, prompt: str | Sequence[str], max_new_chars: int = 200, *,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               stop: str | Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
               logits_processors: Sequence[LogitsProcessor] = (),
               on_unknown: OnUnknown = "error", replacement: str | None = None,
               **penalties: Unpack[PenaltyArguments]
               ) -> Iterator[str] | Iterator[tuple[int, str]]:
        """Like generate, but yields text as it is made: characters for one prompt,
        (row, character) pairs for a list of prompts. Arguments are checked at the call."""
        single = isinstance(prompt, str)
        gen = self.generator(prompt, max_new_chars=max_new_chars, temperature=temperature,
                             top_k=top_k, top_p=top_p, stop=stop, seed=seed,
                             logits_processors=logits_processors, on_unknown=on_unknown,
                             replacement=replacement, **penalties)
        return _stream_single(gen, self.vocab.chars) if single else _stream_rows(
            gen, self.vocab.chars)

    @property
    def chat_template(self) -> ChatTemplate:
        """The artifact's chat template (its manifest's, or the default play script)."""
        return self.manifest.chat_template

    def chat_prompt(self, messages: Sequence[Mapping[str, str]], *,
                    on_unknown: OnUnknown = "error", replacement: str | None = None
                    ) -> ChatPrompt:
        """OpenAI-style messages ({"role", "content", optional "name"}) as the prompt this
        model continues, with the stop strings that end its reply (see `chat_template`).
        Characters outside the vocabulary raise `UnknownCharacterError` naming the message,
        or are skipped or replaced (`on_unknown`)."""
        return chat_prompt(self.chat_template, self.vocab, messages, on_unknown, replacement)

    def chat(self, messages: Sequence[Mapping[str, str]],
             max_new_chars: int = DEFAULT_CHAT_MAX_NEW_CHARS, *,
             stop: str | Sequence[str] | None = None, on_unknown: OnUnknown = "error",
             replacement: str | None = None, **options: object) -> str:
        """The model's reply to `messages`: generated from `chat_prompt(messages)` until the
        template's turn boundary (or one of `stop`), which is left out of the reply, as
        `bard serve`'s /v1/chat/completions does. Other options are `generate`'s."""
        prompt = self.chat_prompt(messages, on_unknown=on_unknown, replacement=replacement)
        stops = [*prompt.stop, *([stop] if isinstance(stop, str) else stop or [])]
        text = self.generate(prompt.text, max_new_chars, stop=stops,
                             **options)  # type: ignore[arg-type]
        ended = [s for s in stops if text.endswith(s)]
        return text[: len(text) - max(map(len, ended))] if ended else text

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
