"""Beam search: the most likely continuations, batched across prompts and beams.

Every step is one graph call over all live beams of all prompts (rows x beams). Each live beam
is extended by every character; per prompt the best `2 * num_beams` extensions are kept, those
that end in a stop string become finished hypotheses, and the best `num_beams` of the others
live on (their states gathered from their parents). At `max_new` the live beams finish too.
A hypothesis is ranked by its log-likelihood divided by `length ** length_penalty` (0: raw
log-likelihood, which favours short endings; 1: per character). There is no early exit: a
longer beam can still win under a positive length penalty, so search runs to `max_new` unless
every beam has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .generation import Batch
from .runtime import Runner


@dataclass
class Hypotheses:
    """The best finished continuations of one prompt: (score, log-likelihood, ids)."""

    capacity: int
    items: list[tuple[float, float, tuple[int, ...]]] = field(default_factory=list)

    def add(self, score: float, log_likelihood: float, ids: tuple[int, ...]) -> None:
        self.items.append((score, log_likelihood, ids))
        if len(self.items) > self.capacity:
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.capacity :]

    def best(self) -> tuple[float, float, tuple[int, ...]]:
        return max(self.items, key=lambda item: item[0])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def normalised(log_likelihood: np.ndarray | float, length: int,
               length_penalty: float) -> np.ndarray | float:
    return log_likelihood / (length ** length_penalty)


def ends_with_stop(history: np.ndarray, stops: list[np.ndarray]) -> np.ndarray:
    """Per row of `history` [rows, t]: does it end with one of the stop id sequences?"""
    done = np.zeros(len(history), dtype=bool)
    for stop in stops:
        if len(stop) <= history.shape[1]:
            done |= (history[:, -len(stop):] == stop).all(axis=1)
    return done


def beam_search(runner: Runner, batch: Batch, max_new: int, num_beams: int,
                length_penalty: float, stops: list[np.ndarray]
                ) -> list[tuple[tuple[int, ...], float]]:
    """Best continuation of each prefilled row of `batch`: (ids, log-likelihood) per row."""
    prompts = len(batch.logits)
    finished = [Hypotheses(num_beams) for _ in range(prompts)]
    owner = np.arange(prompts)  # prompt of each live beam
    scores = np.zeros(prompts)  # log-likelihood of each live beam
    history = np.zeros((prompts, 0), dtype=np.int64)
    logits, state = batch.logits, batch.state
    for step in range(max_new):
        length = step + 1
        vocab = logits.shape[1]
        candidates = scores[:, None] + log_softmax(logits)  # [beams, vocab]
        parents: list[np.ndarray] = []
        chosen: list[np.ndarray] = []
        new_scores: list[np.ndarray] = []
        for prompt in range(prompts):
            beams = np.flatnonzero(owner == prompt)
            if not len(beams):
                continue
            flat = candidates[beams].ravel()
            take = min(2 * num_beams, len(flat))
            top = np.argpartition(-flat, take - 1)[:take]
            top = top[np.argsort(-flat[top], kind="stable")]
            parent, char, score = beams[top // vocab], top % vocab, flat[top]
            ended = np.zeros(take, dtype=bool)
            if stops:
                ended = ends_with_stop(np.concatenate([history[parent], char[:, None]], axis=1),
                                       stops)
                for i in np.flatnonzero(ended):
                    ids = (*history[parent[i]].tolist(), int(char[i]))
                    finished[prompt].add(float(normalised(score[i], length, length_penalty)),
                                         float(score[i]), ids)
            live = np.flatnonzero(~ended)[:num_beams]
            parents.append(parent[live])
            chosen.append(char[live])
            new_scores.append(score[live])
        parent_index = np.concatenate(parents) if parents else np.zeros(0, np.int64)
        if not len(parent_index):
            break  # every beam of every prompt has stopped
        ids = np.concatenate(chosen).astype(np.int64)
        owner, scores = owner[parent_index], np.concatenate(new_scores)
        history = np.concatenate([history[parent_index], ids[:, None]], axis=1)
        if length == max_new:
            for beam in range(len(owner)):
                finished[owner[beam]].add(float(normalised(scores[beam], length,
                                                           length_penalty)),
                                          float(scores[beam]), tuple(history[beam].tolist()))
            break
        out, state = runner.step(ids[:, None], state.select(parent_index))
        logits = out[:, -1]
    return [(hyp.best()[2], hyp.best()[1]) if hyp.items else ((), 0.0) for hyp in finished]
