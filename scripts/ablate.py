"""Regularisation and schedule ablation for the shipped model's recipe, at reduced scale.

Each variant changes one thing against the baseline and trains for the same number of steps
on the standard split; the table reports best validation loss (16 carried-state streams), the
last training loss, and their gap (a measure of overfitting). Run:

    python scripts/ablate.py --out runs/ablation > runs/ablation/table.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bard.training.train import RunRequest, train

BASE = dict(embedding_dim=64, hidden_size=256, num_layers=2, dropout=0.3, batch_size=64,
            seq_len=128, max_steps=1500, warmup_steps=100, learning_rate=2e-3,
            min_learning_rate=1e-4, weight_decay=0.1, eval_interval=250, precision="bf16")
VARIANTS = {
    "baseline (dropout 0.3, wd 0.1, cosine)": {},
    "no dropout": {"dropout": 0.0},
    "no weight decay": {"weight_decay": 0.0},
    "constant learning rate": {"min_learning_rate": 2e-3},
    "smaller (hidden 128)": {"hidden_size": 128},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=BASE["max_steps"])
    args = parser.parse_args()
    rows = []
    for name, change in VARIANTS.items():
        out = args.out / name.split(" (")[0].replace(" ", "-")
        start = time.perf_counter()
        result = train(RunRequest(out=out, preset="tiny", device="cpu", show_progress=False,
                                  overrides={**BASE, "max_steps": args.steps, **change}))
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        train_loss = [r["loss"] for r in records if r["split"] == "train"][-5:]
        last_train = sum(train_loss) / len(train_loss)
        rows.append((name, result.parameters, result.best_val_loss, result.last_val_loss,
                     last_train, time.perf_counter() - start))
    print(f"| variant ({args.steps} steps of 64 x 128) | parameters | best val | last val | "
          "train (last 50 steps) | val - train | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, params, best, last, tr, seconds in rows:
        print(f"| {name} | {params:,} | {best:.4f} | {last:.4f} | {tr:.4f} | {last - tr:+.4f} "
              f"| {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
