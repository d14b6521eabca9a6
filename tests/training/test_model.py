"""The model: logits and state shapes, and training-only regularisation."""

from __future__ import annotations

import torch
from bard.training.config import ModelConfig
from bard.training.model import CharLSTM

CONFIG = ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=16, num_layers=2,
                     dropout=0.0, weight_drop=0.5)


def test_forward_returns_logits_and_next_state() -> None:
    model = CharLSTM(CONFIG).eval()
    logits, (h, c) = model(torch.randint(0, 11, (3, 7)))
    assert logits.shape == (3, 7, 11)
    assert h.shape == c.shape == (2, 3, 16)


def test_weight_drop_acts_only_while_training() -> None:
    torch.manual_seed(0)
    model = CharLSTM(CONFIG)
    tokens = torch.randint(0, 11, (2, 20))
    model.eval()
    reference, _ = model(tokens)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    first, _ = model(tokens)
    second, _ = model(tokens)
    assert not torch.allclose(first, reference), "recurrent weights should be dropped"
    assert not torch.allclose(first, second), "a new mask each forward pass"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} must not be changed in place"
    model.eval()
    assert torch.equal(model(tokens)[0], reference), "evaluation uses the full weights"


def test_weight_drop_passes_gradients_to_the_recurrent_weights() -> None:
    model = CharLSTM(CONFIG).train()
    logits, _ = model(torch.randint(0, 11, (2, 9)))
    logits.square().mean().backward()
    for layer in range(CONFIG.num_layers):
        grad = getattr(model.lstm, f"weight_hh_l{layer}").grad
        assert grad is not None and grad.abs().sum() > 0
