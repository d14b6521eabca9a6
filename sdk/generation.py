"""The batched decode loop: one prefill call for all prompts, then one call per character.

Prompts of different lengths are prefilled together: rows are padded at the end with the
padding id, which the graph turns into the ONNX LSTM's `sequence_lens`, so padding never
reaches the recurrent state. Rows that finish (a stop string) leave the batch, so they stop
costing work. Everything that can be checked is checked before the loop starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .runtime import Runner, State
from .sampling import SamplingParams, sample, uniforms

PADDING_ID = -1


@dataclass
class Batch:
    """Rows positioned after their prompts: state and the logits of the next character."""

    state: State
    logits: np.ndarray  # [rows, vocab]


def prefill(runner: Runner, prompts: list[np.ndarray], state: State) -> Batch:
    """Feed every row's ids (each non-empty) in one call, starting from `state`."""
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    tokens = np.full((len(prompts), int(lengths.max())), PADDING_ID, dtype=np.int64)
    for row, ids in enumerate(prompts):
        tokens[row, : len(ids)] = ids
    logits, state = runner.step(tokens, state)
    return Batch(state, logits[np.arange(len(prompts)), lengths - 1])


def stop_matcher(stops: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    return [s for s in stops if len(s)], max((len(s) for s in stops), default=0)


def decode(
    runner: Runner,
    batch: Batch,
    max_new: int,
    params: SamplingParams,
    keys: np.ndarray,
    stops: list[np.ndarray],
    feed_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row indices, new ids) per step until every row has `max_new` ids or a stop.

    With `feed_last`, the final ids are fed too, so the batch's state ends after them (for a
    session that continues); `batch` is updated in place to the state of the rows that remain.
    """
    rows = np.arange(len(batch.logits))
    stops, longest = stop_matcher(stops)
    history = np.full((len(rows), max(longest, 1)), PADDING_ID, dtype=np.int64)
    for step in range(max_new):
        u = None if params.greedy else uniforms(keys[rows], step)
        ids = sample(batch.logits, params, u)
        yield rows, ids
        last = step == max_new - 1
        done = None
        if stops:
            history = np.roll(history, -1, axis=1)
            history[:, -1] = ids
            done = np.zeros(len(rows), dtype=bool)
            for stop in stops:
                done |= (history[:, -len(stop):] == stop).all(axis=1)
        if not feed_last:
            if last:
                return
            if done is not None and done.any():
                keep = np.flatnonzero(~done)
                if not len(keep):
                    return
                rows, ids, history = rows[keep], ids[keep], history[keep]
                batch.state = batch.state.select(keep)
        logits, batch.state = runner.step(ids[:, None], batch.state)
        batch.logits = logits[:, -1]
        if last:
            return
        if feed_last and done is not None and done.any():
            keep = np.flatnonzero(~done)
            if not len(keep):
                return
            rows, history = rows[keep], history[keep]
            batch.state, batch.logits = batch.state.select(keep), batch.logits[keep]
