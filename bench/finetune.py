"""The "before" of a fine-tuning run: its parent model, unchanged, scored on the run's
validation split with the trainer's own definition (the same streams, the state carried), so
the figure compares directly with the run's "best checkpoint on the whole validation split".

    python -m bard.bench.finetune RUN_DIR

The parent is read again from where run.json says it came from; its vocabulary is grown as at
step 0 (new characters at a probability below e**-20), which is what "the model without
fine-tuning" means on a text with characters it lacks. The figure with those characters left
out (`bard eval FILE --split val --on-unknown skip`) is printed beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bard_sdk
import torch
from bard.export.reimport import load_parent
from bard.training.checkpoint import find_checkpoint, load_checkpoint
from bard.training.corpus import CorpusSource, prepare_tokens
from bard.training.data import eval_spans, split_point
from bard.training.evaluate import stream_nll
from bard.training.finetune import initial_weights
from bard.training.lineage import Lineage
from bard.training.model import CharLSTM
from bard_sdk.vocab import Vocabulary


def step0_losses(run_dir: Path) -> dict[str, float]:
    run = json.loads((run_dir / "run.json").read_text())
    lineage = Lineage.from_json(run.get("parent"), "run.json parent")
    if lineage is None:
        raise SystemExit(f"{run_dir} is not a fine-tuning run (run.json has no parent)")
    checkpoint = load_checkpoint(find_checkpoint(run_dir, "best"))
    parent = load_parent(lineage.location)
    model = CharLSTM(checkpoint.model_config)
    model.load_state_dict(initial_weights(parent, checkpoint.model_config,
                                          lineage.new_row_bias))
    vocab = Vocabulary(checkpoint.vocab)
    corpus = checkpoint.corpus
    tokens = prepare_tokens(run_dir, CorpusSource(corpus.sources()), corpus.sha256, vocab,
                            print).open()
    val = tokens[split_point(len(tokens), corpus.val_fraction):]
    spans = eval_spans(len(val), checkpoint.train_config.val_streams)
    total, count = stream_nll(model, val, spans, torch.device("cpu")) or (0.0, 1)
    text = vocab.decode(val)
    skipped = bard_sdk.load(lineage.location, device="cpu").score(text, on_unknown="skip")
    return {"parent_step0_nats": total / count, "parent_skip_unknown_nats": skipped.nats_per_char,
            "fine_tuned_nats": float(checkpoint.state.get("val_loss_whole_split", "nan")),
            "val_chars": len(val)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(step0_losses(Path(sys.argv[1])), indent=1, allow_nan=False))
