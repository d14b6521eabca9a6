"""Prefill: prompts into the recurrent state, chunked; the decode loop is in decoding.py.

Prompts of different lengths are prefilled together: rows are padded at the end with the
padding id, which the graph turns into the ONNX LSTM's `sequence_lens`, so padding never
reaches the recurrent state. Prefill feeds at most PREFILL_CHUNK characters per row per call,
carrying the state, and a row leaves the batch once its prompt is fed, so memory does not grow
with prompt length and a long prompt beside short ones costs what it costs alone. Rows that
finish decoding (a stop string) leave the batch too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract import PADDING_ID
from .runtime import Runner, State

__all__ = ["PADDING_ID", "PREFILL_CHUNK", "Batch", "prefill"]
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
