"""The batched decode loop: a chunked prefill for all prompts, then one call per character.

Prompts of different lengths are prefilled together: rows are padded at the end with the
padding id, which the graph turns into the ONNX LSTM's `sequence_lens`, so padding never
reaches the recurrent state. Prefill feeds at most PREFILL_CHUNK characters per row per call,
carrying the state, and a row leaves the batch once its prompt is fed, so memory does not grow
with prompt length and a long prompt beside short ones costs what it costs alone. Rows that
finish decoding (a stop string) leave the batch too. Everything that can be checked is checked
before the loop starts; outputs grow as they are produced (`collect`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .runtime import Runner, State
from .sampling import SamplingParams, sample, uniforms

PADDING_ID = -1
# Characters per row per prefill call. onnxruntime's LSTM holds ~13 KB per (row x character)
# for the shipped 2 x 512 model while a call runs, so this bounds a call to ~3.3 MB per row;
# 1,000-character prompts take 4 calls, within 10% of one call's time (BENCHMARKS.md).
PREFILL_CHUNK = 256


@dataclass
class Batch:
    """Rows positioned after their prompts: state and the logits of the next character."""

    state: State
    logits: np.ndarray  # [rows, vocab]


def _padded(prompts: list[np.ndarray], rows: np.ndarray, start: int, width: int) -> np.ndarray:
    tokens = np.full((len(rows), width), PADDING_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        piece = prompts[row][start : start + width]
        tokens[i, : len(piece)] = piece
    return tokens


def prefill(runner: Runner, prompts: list[np.ndarray], state: State,
            chunk: int = PREFILL_CHUNK) -> Batch:
    """Feed every row's ids (each non-empty) starting from `state`, `chunk` characters per row
    per call with the state carried. Prompts that fit one call go together in one call; longer
    ones go in chunks, a row leaving as soon as its prompt is fed. So no row is padded to a
    long prompt's length, and rows come back in their order."""
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    rows = np.arange(len(prompts))
    short = lengths <= chunk
    if short.any() and not short.all():
        groups = [rows[short], rows[~short]]
        return _merge(runner, len(prompts), [
            (group, _chunked(runner, prompts, lengths, group, state.select(group), chunk))
            for group in groups])
    return _chunked(runner, prompts, lengths, rows, state, chunk)


def _chunked(runner: Runner, prompts: list[np.ndarray], lengths: np.ndarray, rows: np.ndarray,
             state: State, chunk: int) -> Batch:
    """Prefill prompts[rows] (state: theirs, in that order), chunk by chunk."""
    finished: list[tuple[np.ndarray, Batch]] = []  # (positions in `rows`, their batch)
    active = np.arange(len(rows))
    start = 0
    while True:
        width = min(chunk, int(lengths[rows[active]].max()) - start)
        logits, state = runner.step(_padded(prompts, rows[active], start, width), state)
        ends = lengths[rows[active]] <= start + width
        ending = np.flatnonzero(ends)
        last = logits[ending, lengths[rows[active[ending]]] - 1 - start]
        if ends.all():
            if not finished:  # every row ended in this call, in order: the common case
                return Batch(state, last)
            return _merge(runner, len(rows), [*finished, (active, Batch(state, last))])
        keep = np.flatnonzero(~ends)
        if ending.size:
            finished.append((active[ending], Batch(state.select(ending), last)))
            state = state.select(keep)
        active = active[keep]
        start += width


def _merge(runner: Runner, count: int, parts: list[tuple[np.ndarray, Batch]]) -> Batch:
    """One batch of `count` rows from parts that each hold some of them (by index)."""
    h0, _ = parts[0][1].state.to_numpy()
    h = np.empty((h0.shape[0], count, h0.shape[2]), dtype=np.float32)
    c = np.empty_like(h)
    logits = np.empty((count, parts[0][1].logits.shape[1]), dtype=np.float32)
    for rows, batch in parts:
        h[:, rows], c[:, rows] = batch.state.to_numpy()
        logits[rows] = batch.logits
    return Batch(runner.state(h, c), logits)


def collect(events: Iterable[tuple[np.ndarray, np.ndarray]], rows: int,
            max_new: int) -> list[np.ndarray]:
    """Each row's ids from `decode`'s events. The buffer doubles as ids arrive, so memory
    follows what was produced, not `max_new` (a huge limit ended by a stop string is cheap)."""
    out = np.empty((rows, max(1, min(max_new, 256))), dtype=np.int32)
    lengths = np.zeros(rows, dtype=np.int64)
    for step, (active, ids) in enumerate(events):  # active rows all have `step` ids
        if step == out.shape[1]:
            grown = np.empty((rows, min(2 * step, max_new)), dtype=np.int32)
            grown[:, :step] = out
            out = grown
        out[active, step] = ids
        lengths[active] = step + 1
    return [out[r, : lengths[r]] for r in range(rows)]


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
