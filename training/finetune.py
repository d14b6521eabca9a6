"""Starting a run from a trained model (`bard train --init-from`): its architecture, its
weights, and its vocabulary grown by the characters the new text brings.

Old characters keep their ids and new ones are appended, so every old weight keeps its meaning.
A new character's embedding is the mean of the old ones (a neutral input: it only matters once
the new text feeds that character). Its output row starts with zero weights and a bias so low
that, for every hidden state the LSTM can produce, it takes at most e**-MARGIN of the
probability: the predictions for the old characters are those of the source model, to float
precision, at step 0 (on the new text; see `new_character_bias`). Learning then moves the
row's weights (AdamW moves each by about the learning rate per step, hundreds of them at once),
not the bias alone.

A source is a run directory (read here) or an artifact (read by export/, the only room that
knows ONNX: see export/reimport.py); both arrive as a `Parent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bard_sdk.vocab import Vocabulary

from .checkpoint import find_checkpoint, load_checkpoint
from .config import ModelConfig
from .errors import UsageError
from .lineage import Lineage
from .model import CharLSTM
from .records import Fields

MARGIN = 20.0  # nats: a new character's share of the probability at step 0 is below e**-20
SAMPLE_CHARS = 16_384  # of the new text's training split, read once to place the new bias


@dataclass(frozen=True)
class Parent:
    """A trained model to start from, as torch weights, with what to call it."""

    name: str
    kind: str  # "artifact" | "run"
    location: str  # the directory it was read from
    sha256: str  # of the weights file read (model.onnx, or the checkpoint's model.safetensors)
    model_config: ModelConfig
    vocab: tuple[str, ...]
    weights: dict[str, torch.Tensor]


def extend_vocabulary(parent: tuple[str, ...], corpus: Vocabulary) -> tuple[Vocabulary,
                                                                            list[str]]:
    """The parent's characters in their places, then the corpus's new ones (sorted)."""
    known = set(parent)
    added = [c for c in corpus.chars if c not in known]
    return Vocabulary([*parent, *added]), added


def lineage_of(parent: Parent, added: list[str], new_bias: float | None) -> Lineage:
    return Lineage(parent.name, parent.kind, parent.sha256, parent.location,
                   parent.model_config.vocab_size, added, new_bias)


def new_character_bias(parent: Parent, config: ModelConfig, sample: np.ndarray) -> float:
    """The bias for new output rows (zero weights): MARGIN nats below the log-sum-exp of the
    old logits at every position of `sample` (ids of the new text, read by the parent with
    new characters embedded as the mean), and never below the bound that holds for every
    hidden state in [-1, 1]^H (the range of an LSTM's output), from two lower bounds of
    logsumexp(W h + b): one row's worst case, b_j - |W_j|_1, and (Jensen) log V + mean(b) -
    |mean of W's rows|_1. The bound alone is loose (about -39 for the shipped model, where
    the text's own floor is about -16), and a lower bias takes longer to learn from."""
    head_w = parent.weights["head.weight"].double()
    head_b = parent.weights["head.bias"].double()
    worst_row = float((head_b - head_w.abs().sum(dim=1)).max())
    jensen = math.log(len(head_b)) + float(head_b.mean()) - float(head_w.mean(dim=0).abs().sum())
    bound = max(worst_row, jensen) - MARGIN
    if len(sample) < 2:
        return bound
    model = CharLSTM(config)
    model.load_state_dict(grown(parent, config, bound))
    model.eval()
    with torch.inference_mode():
        logits, _ = model(torch.from_numpy(sample.astype(np.int64))[None, :])
    old = logits[0, :, : parent.model_config.vocab_size].double()
    return max(bound, float(torch.logsumexp(old, dim=-1).min()) - MARGIN)


def initial_weights(parent: Parent, config: ModelConfig,
                    new_bias: float | None) -> dict[str, torch.Tensor]:
    """The parent's weights grown to `config.vocab_size` rows (see the module docstring)."""
    if config.vocab_size > parent.model_config.vocab_size and new_bias is None:
        raise RuntimeError("new vocabulary rows need a bias (new_character_bias)")
    return grown(parent, config, new_bias or 0.0)


def grown(parent: Parent, config: ModelConfig, new_bias: float) -> dict[str, torch.Tensor]:
    weights = {k: v.detach().float().clone() for k, v in parent.weights.items()}
    extra = config.vocab_size - parent.model_config.vocab_size
    if extra < 0:
        raise UsageError("the vocabulary cannot shrink when fine-tuning")
    if extra == 0:
        return weights
    embedding = weights["embedding.weight"]
    head_w, head_b = weights["head.weight"], weights["head.bias"]
    weights["embedding.weight"] = torch.cat(
        [embedding, embedding.mean(dim=0, keepdim=True).expand(extra, -1)])
    weights["head.weight"] = torch.cat([head_w, head_w.new_zeros(extra, head_w.shape[1])])
    weights["head.bias"] = torch.cat([head_b, head_b.new_full((extra,), new_bias)])
    return weights


def parent_from_run(run_dir: Path) -> Parent:
    """A run directory's best checkpoint (its last if it has no best)."""
    checkpoint = load_checkpoint(find_checkpoint(run_dir, "best"))
    files = Fields(checkpoint.state, str(checkpoint.path / "state.json")).obj("files")
    return Parent(name=run_dir.resolve().name, kind="run", location=str(run_dir.resolve()),
                  sha256=str(files.string("model.safetensors")),
                  model_config=checkpoint.model_config, vocab=checkpoint.vocab,
                  weights=checkpoint.weights)
