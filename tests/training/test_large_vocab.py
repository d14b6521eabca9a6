"""Large alphabets: the loss in slices gives the whole tensor's gradients, and a
20,000-character vocabulary trains the tiny preset in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bard.bench.large_vocab import synthetic_text
from bard.training.config import ModelConfig
from bard.training.loss import nll_in_chunks
from bard.training.model import CharLSTM


@pytest.mark.parametrize("vocab", [65, 3001])
def test_the_loss_in_slices_has_the_gradients_of_the_whole(vocab: int) -> None:
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(vocab_size=vocab, embedding_dim=8, hidden_size=16,
                                 num_layers=1, dropout=0.0))
    tokens = torch.randint(0, vocab, (4, 25))
    targets = torch.randint(0, vocab, (4, 25))
    results = []
    for chunk in (10**9, 7 * vocab, vocab):  # one slice; 15 slices, the last short; 100
        model.zero_grad()
        outputs = model._run_lstm(model._embed(tokens), model.zero_state(4))[0]
        nll = nll_in_chunks(outputs, model.head, targets, chunk_logits=chunk)
        nll.mean().backward()
        results.append((nll.detach(), [p.grad.clone() for p in model.parameters()]))
    whole = torch.nn.functional.cross_entropy(model(tokens)[0].reshape(-1, vocab),
                                              targets.reshape(-1), reduction="none")
    torch.testing.assert_close(results[0][0].reshape(-1), whole.detach())
    for nll, grads in results[1:]:
        torch.testing.assert_close(nll, results[0][0], rtol=1e-6, atol=1e-6)
        for got, want in zip(grads, results[0][1]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_the_model_with_targets_returns_what_its_logits_give() -> None:
    torch.manual_seed(1)
    model = CharLSTM(ModelConfig(vocab_size=5000, embedding_dim=8, hidden_size=16,
                                 num_layers=2, dropout=0.0)).eval()
    tokens = torch.randint(0, 5000, (3, 30))
    with torch.inference_mode():
        logits, _ = model(tokens)
        nll, _ = model(tokens[:, :-1], targets=tokens[:, 1:])
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5000),
                                                 tokens[:, 1:].reshape(-1), reduction="none")
    torch.testing.assert_close(nll.reshape(-1), expected)


TRAIN_RSS = """
import sys
from pathlib import Path
from bard.training.train import RunRequest, train
result = train(RunRequest(out=Path(sys.argv[2]), data=Path(sys.argv[1]), preset="tiny",
                          device="cpu", threads=2, show_progress=False,
                          overrides={"max_steps": 2, "eval_interval": 2, "val_streams": 16}))
assert result.stopped == "finished", result
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_20000_character_alphabet_trains_the_tiny_preset_in_bounded_memory(
        tmp_path: Path) -> None:
    """Whole, one batch's logits (32 x 64 x 20,000 floats) are 164 MB, and the evaluation's
    (16 streams x 512) 655 MB, each several times over in the backward pass and softmax."""
    corpus = tmp_path / "zh.txt"
    corpus.write_text(synthetic_text(20_000, 40_000), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", TRAIN_RSS, str(corpus), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stdout.split()[-1]) / 1024
    assert peak_mb <= 1000, f"peak RSS {peak_mb:.0f} MB"
