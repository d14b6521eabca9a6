"""The contract between the trainer's graph and the SDK, defined once for every room.

Graph: `tokens` int64 [batch, time], `h0`/`c0` float32 [layers, batch, hidden] ->
`logits` float32 [batch, time, vocab], `hn`/`cn`. A character's id is its index in the
manifest's vocabulary; `PADDING_ID` pads a row's end (the graph turns it into the LSTM's
`sequence_lens`, so padding never reaches the state). An empty prompt starts from the zero
state primed with `PRIME_CHARACTER`, the way a speech starts in the training text; a model
whose vocabulary lacks it refuses empty prompts rather than guess.
The exporter (export/), the SDK, the benches and the manifest's schema all read these names.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InvalidArgumentError

TOKENS, H0, C0 = INPUT_NAMES = ("tokens", "h0", "c0")
LOGITS, HN, CN = OUTPUT_NAMES = ("logits", "hn", "cn")
TOKENS_DTYPE = "int64"
STATE_DTYPE = LOGITS_DTYPE = "float32"
PADDING_ID = -1
PRIME_CHARACTER = "\n"


def state_shape(num_layers: int, rows: int, hidden_size: int) -> tuple[int, int, int]:
    """The shape of `h0`, `c0`, `hn` and `cn` for `rows` rows."""
    return (num_layers, rows, hidden_size)


def zero_state(num_layers: int, rows: int, hidden_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, c) of `rows` fresh rows: zeros, float32."""
    shape = state_shape(num_layers, rows, hidden_size)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def prime_id(index: Mapping[str, int]) -> int | None:
    """The id an empty prompt is read as: the prime character's, or None if the vocabulary
    has no newline."""
    return index.get(PRIME_CHARACTER)


def prompt_ids(ids: np.ndarray, prime: int | None) -> np.ndarray:
    """The empty-prompt rule: a prompt with no ids (empty, or emptied by on_unknown='skip')
    is read as the prime character alone; without one in the vocabulary it is refused."""
    if len(ids):
        return ids
    if prime is None:
        raise InvalidArgumentError(
            "this model's vocabulary has no newline, which an empty prompt starts from: "
            "give a prompt of at least one character of the vocabulary", param="prompt")
    return np.array([prime], np.int64)
