"""`GenerationOptions`: every generation setting in one frozen object, checked once.

In the spirit of onnxruntime-genai's `GeneratorParams` and vLLM's `SamplingParams`: the public
calls (`Model.generate`, `stream`, `generator`, `Session.generate`, `Engine.submit`) keep their
keyword arguments for users, and each builds one `GenerationOptions.checked(...)` from them
before any work. Everything after that (the decode loop, the scheduler, beam search) reads
checked, plain values and never validates again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arguments import describe, integer, real
from .decoding import LogitsProcessor, RowSettings
from .errors import InvalidArgumentError
from .penalties import NO_PENALTIES, Penalties
from .sampling import SamplingParams, row_keys
from .vocab import OnUnknown, Vocabulary

# The most characters one call may generate per row: about a day at batch 1 on a CPU, and a
# 1 GB string. Larger values are surely a mistake (10**12 once meant a MemoryError); for
# "until the stop string", pass a large limit such as 10**8: only what is produced is kept.
MAX_NEW_CHARS = 10**9
SEED_LIMIT = 2**64  # seeds are 64-bit: 0 <= seed < 2**64
MAX_BEAMS = 256
# Stop strings are matched against each row's last characters every step: their length and
# number bound that work (and the per-row history it keeps), so both have a documented limit.
MAX_STOP_CHARS = 1024
MAX_STOPS = 16


@dataclass(frozen=True, eq=False)
class GenerationOptions:
    """How every row of one call samples, ends and reads its prompt.

    `seeds` holds one seed per row (None: fresh entropy); `stop_ids` the stop strings as ids.
    Build with `checked`, which refuses what cannot work with a clear error naming the
    argument (`InvalidArgumentError.param`)."""

    max_new_chars: int = 200
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seeds: tuple[int | None, ...] = (None,)
    stops: tuple[str, ...] = ()
    stop_ids: tuple[np.ndarray, ...] = ()
    logits_processors: tuple[LogitsProcessor, ...] = ()
    num_beams: int = 1
    length_penalty: float = 1.0
    on_unknown: OnUnknown = "error"
    replacement: str | None = None
    include_stop: bool = True
    penalties: Penalties = NO_PENALTIES

    @classmethod
    def checked(cls, vocab: Vocabulary, *, rows: int = 1, max_new_chars: object = 200,
                temperature: object = 1.0, top_k: object = None, top_p: object = None,
                stop: object = None, seed: object = None, logits_processors: object = (),
                num_beams: object = 1, length_penalty: object = 1.0,
                on_unknown: OnUnknown = "error", replacement: str | None = None,
                include_stop: object = True, single_seed: bool = False,
                frequency_penalty: object = 0.0, presence_penalty: object = 0.0,
                repetition_penalty: object = 1.0, min_p: object = None,
                logit_bias: object = None) -> GenerationOptions:
        """Every argument checked, in the order the public calls document them. `rows` is
        the number of prompts (a seed list must have one per row); `single_seed` refuses a
        seed list (one request, one seed). The penalty arguments are `PenaltyArguments`'."""
        beams = integer(num_beams, "num_beams", minimum=1, maximum=MAX_BEAMS)
        adjust = Penalties.checked(
            len(vocab), vocab.index, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repetition_penalty=repetition_penalty,
            min_p=min_p, logit_bias=logit_bias)
        if beams > 1:
            refuse_sampling_in_beam_search(temperature, top_k, top_p, seed, logits_processors,
                                           adjust)
        max_new = check_max_new(max_new_chars)
        sampling = (SamplingParams() if beams > 1 else
                    SamplingParams.checked(temperature, top_k, top_p, len(vocab)))
        seeds = (check_seed(seed),) if single_seed else tuple(check_seeds(seed, rows))
        stops = check_stops(stop, vocab)
        processors = tuple(check_processors(logits_processors))
        penalty = real(length_penalty, "length_penalty", minimum=-10.0, maximum=10.0)
        if not isinstance(include_stop, bool):
            raise InvalidArgumentError(f"include_stop must be True or False, got "
                                       f"{describe(include_stop)}", param="include_stop")
        return cls(max_new, sampling, seeds, tuple(stops), tuple(vocab.encode(s) for s in stops),
                   processors, beams, penalty, on_unknown, replacement, include_stop, adjust)

    def row_settings(self, rows: int) -> list[RowSettings]:
        """One RowSettings per row: its sampling, random stream, limit and stop ids. A single
        seed of None is fresh entropy for every row."""
        seeds = self.seeds if len(self.seeds) == rows else self.seeds[:1] * rows
        return [RowSettings(self.sampling, key, self.max_new_chars, self.stop_ids,
                            self.penalties) for key in row_keys(list(seeds))]


def refuse_sampling_in_beam_search(temperature: object, top_k: object, top_p: object,
                                   seed: object, processors: object,
                                   penalties: Penalties = NO_PENALTIES) -> None:
    sampling = {"temperature": temperature != 1.0, "top_k": top_k is not None,
                "top_p": top_p is not None, "seed": seed is not None,
                "logits_processors": bool(processors), **penalties.given()}
    given = [name for name, used in sampling.items() if used]
    if given:
        raise InvalidArgumentError(f"{', '.join(given)} do(es) not apply to beam search "
                                   "(num_beams > 1), which does not sample", param=given[0])


def check_prompts(prompt: object) -> tuple[list[str], bool]:
    """Normalise a prompt or list of prompts; returns (prompts, was_single)."""
    if isinstance(prompt, str):
        return [prompt], True
    if not isinstance(prompt, (list, tuple)):
        raise InvalidArgumentError(
            f"prompt must be a string or a list of strings, got {type(prompt).__name__}",
            param="prompt")
    if not prompt:
        raise InvalidArgumentError("prompt list is empty", param="prompt")
    bad = [i for i, p in enumerate(prompt) if not isinstance(p, str)]
    if bad:
        raise InvalidArgumentError(f"prompt list must hold strings only; item {bad[0]} is "
                                   f"{type(prompt[bad[0]]).__name__}", param="prompt")
    return list(prompt), False


def check_seed(seed: object) -> int | None:
    """None (fresh entropy) or an integer in [0, 2**64), Python or numpy."""
    if seed is None:
        return None
    return integer(seed, "seed", minimum=0, maximum=SEED_LIMIT - 1)


def check_seeds(seed: object, rows: int) -> list[int | None]:
    """One seed per row: a list gives them; one int seeds row i with seed + i."""
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = [check_seed(s) for s in list(seed)]
        if len(seeds) != rows or any(s is None for s in seeds):
            raise InvalidArgumentError(f"got {len(seeds)} seeds for {rows} prompts; pass one "
                                       "integer per prompt", param="seed")
        return seeds
    first = check_seed(seed)
    if first is None:
        return [None] * rows
    if first + rows > SEED_LIMIT:
        raise InvalidArgumentError(f"seed + {rows - 1} (one per row) must stay below 2**64",
                                   param="seed")
    return [first + i for i in range(rows)]


def check_max_new(max_new_chars: object) -> int:
    return integer(max_new_chars, "max_new_chars", minimum=0, maximum=MAX_NEW_CHARS)


def check_stops(stop: object, vocab: Vocabulary) -> list[str]:
    """Stop strings as a list: each non-empty and made of characters the model can produce
    (one it could never generate would silently never stop)."""
    if stop is None:
        return []
    if not isinstance(stop, (str, list, tuple)):
        raise InvalidArgumentError(
            f"stop must be a string or a list of strings, got {type(stop).__name__}",
            param="stop")
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise InvalidArgumentError(
            f"stop must be a non-empty string or a list of them, got {describe(stop)}",
            param="stop")
    if len(stops) > MAX_STOPS:
        raise InvalidArgumentError(f"stop may hold at most {MAX_STOPS} strings, got "
                                   f"{len(stops)}", param="stop")
    for s in stops:
        if len(s) > MAX_STOP_CHARS:
            raise InvalidArgumentError(f"a stop string may be at most {MAX_STOP_CHARS} "
                                       f"characters, got one of {len(s)}", param="stop")
        unknown = sorted({ch for ch in s if ch not in vocab})
        if unknown:
            raise InvalidArgumentError(
                f"stop string {describe(s)} can never occur: "
                f"{', '.join(map(repr, unknown[:10]))} not in the model's vocabulary",
                param="stop")
    return stops


def check_processors(processors: object) -> list[LogitsProcessor]:
    if not isinstance(processors, (list, tuple)) or not all(callable(p) for p in processors):
        raise InvalidArgumentError("logits_processors must be a list of callables "
                                   "(step, ids, logits) -> logits", param="logits_processors")
    return list(processors)
