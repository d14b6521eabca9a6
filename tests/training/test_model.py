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


def test_embedding_dropout_drops_whole_characters_only_while_training() -> None:
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=16,
                                 embedding_dropout=0.5))
    tokens = torch.arange(11).repeat(3).reshape(1, 33)  # every character three times
    plain = model.embedding(tokens)
    model.train()
    dropped = model._embed(tokens)
    kept = [bool(dropped[0, i].abs().sum() > 0) for i in range(11)]
    assert 0 < sum(kept) < 11, "some characters dropped, some kept"
    for char in range(11):
        rows = dropped[0, char::11]
        assert torch.equal(rows[0], rows[1]) and torch.equal(rows[1], rows[2]), \
            "one mask per character: the same at every position"
        expected = plain[0, char] * 2 if kept[char] else torch.zeros(8)
        assert torch.allclose(rows[0], expected), "kept rows are scaled by 1 / (1 - p)"
    model.eval()
    assert torch.equal(model._embed(tokens), plain), "evaluation uses every embedding"


def test_training_loss_adds_ar_and_tar_and_reports_plain_cross_entropy() -> None:
    from bard.training.config import TrainConfig
    from bard.training.loss import training_loss
    from bard.training.model import Outputs

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    raw = torch.randn(2, 5, 16)
    outputs = Outputs(raw, raw * 2)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1),
                                            reduction="none").reshape(2, 5)
    cross_entropy = nll.mean()
    total, reported = training_loss(nll, outputs, TrainConfig())
    assert torch.equal(total, reported) and torch.allclose(reported, cross_entropy)
    total, reported = training_loss(nll, outputs,
                                    TrainConfig(activation_reg=2.0, temporal_activation_reg=3.0))
    expected = (cross_entropy + 2.0 * (raw * 2).pow(2).mean()
                + 3.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean())
    assert torch.allclose(total, expected) and torch.allclose(reported, cross_entropy)


def test_the_weight_average_warms_up_then_follows_its_decay() -> None:
    from bard.training.averaging import WeightAverage

    model = CharLSTM(CONFIG)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    average.update(model)  # warm-up: decay min(0.5, 1/10) = 0.1
    for key, value in average.state_dict().items():
        assert torch.allclose(value, 0.1 * start[key] + 0.9), key
    after_one = {k: v.clone() for k, v in average.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    for _ in range(9):
        average.update(model)  # updates 1..9: warm-up decays 2/11 .. 10/19, all below 0.5
    decay = 0.5
    average.update(model)  # update 10: (1 + 10) / (10 + 10) = 0.55 > 0.5, so 0.5
    assert average.updates == 11
    expected_gap = {k: (after_one[k] - 3.0) for k in after_one}
    for n in range(1, 10):
        factor = (1 + n) / (10 + n)
        expected_gap = {k: v * factor for k, v in expected_gap.items()}
    for key, value in average.state_dict().items():
        assert torch.allclose(value, 3.0 + expected_gap[key] * decay, atol=1e-6), key
    assert all(not p.requires_grad for p in average.model.parameters())
