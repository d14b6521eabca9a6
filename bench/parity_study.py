"""`python -m bard.bench.parity_study`: the parity gate's figures over many models, the
measurements behind its bounds (export/parity.py; BENCHMARKS.md "Parity gate").

Trains small models on texts of the shapes users bring (held-out books, a 3,000-character
snippet, tabs, a NUL, one long line, CRLF with a BOM and emoji) with several seeds and sizes,
exports each through the real `bard export` path and gate, and reports every check's worst
difference as a fraction of the reference's magnitude, the share of the gate's limit it used,
and whether the old absolute state bound (1e-5) would have passed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bard.export.export import ExportRequest, export_run
from bard.export.parity import ParityError, ParityReport
from bard.training.fsutil import atomic_write_text
from bard.training.train import RunRequest, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OLD_STATE_TOL = 1e-5


def sonnets() -> str:
    return (DATA / "sonnets.txt").read_text(encoding="utf-8")


SHAPES: dict[str, Callable[[], str]] = {
    "sonnets": sonnets,
    "hamlet": lambda: (DATA / "hamlet.txt").read_text(encoding="utf-8"),
    "spenser": lambda: (DATA / "spenser.txt").read_text(encoding="utf-8"),
    "sonnets-3000": lambda: sonnets()[:3000],
    "sonnets-tabs": lambda: "\n".join("\t" + line.lstrip() if line.startswith(" ") else line
                                      for line in sonnets().split("\n")),
    "sonnets-nul": lambda: sonnets()[:5000] + "\0" + sonnets()[5000:],
    "sonnets-one-line": lambda: sonnets().replace("\n", " "),
    "sonnets-crlf": lambda: sonnets().replace("\n", "\r\n"),
    "sonnets-bom": lambda: "\ufeff" + sonnets(),
    "sonnets-emoji": lambda: sonnets().replace("\n", " \U0001f339\n"),
}
SIZES = {
    "tiny": {},  # the preset: 1 x 128
    "2x48": dict(embedding_dim=16, hidden_size=48, num_layers=2, max_steps=150),
    "1x16": dict(embedding_dim=8, hidden_size=16, num_layers=1, max_steps=150),
    "2x256": dict(embedding_dim=64, hidden_size=256, num_layers=2, max_steps=60,
                  eval_interval=60),
}


@dataclass
class Case:
    corpus: str
    size: str
    seed: int


def default_cases() -> list[Case]:
    """Issue 26's table (the tiny preset: the books with seeds 1 and 2, each variant with
    1337), then other sizes."""
    cases = [Case(name, "tiny", seed) for name in ("sonnets", "hamlet", "spenser")
             for seed in (1, 2)]
    cases += [Case(name, "tiny", 1337) for name in SHAPES if name.startswith("sonnets-")]
    cases += [Case(name, "2x48", seed) for name, seed in (("hamlet", 1), ("sonnets-one-line", 2))]
    cases += [Case(name, "1x16", seed) for name, seed in (("spenser", 1), ("sonnets-nul", 2))]
    cases += [Case(name, "2x256", 1) for name in ("hamlet", "sonnets-tabs")]
    return cases


def figures(report: ParityReport) -> dict[str, float | int | bool | None]:
    def worst(prefix: str) -> tuple[float, float]:
        picked = [c for c in report.comparisons if c.check.startswith(prefix)]
        return (max(c.diff / max(c.scale, 1e-30) for c in picked),
                max(c.fraction for c in picked))

    logits_rel, logits_share = worst("logits")
    state_rel, state_share = worst("state")
    return {"max_logits_diff": report.max_logits_diff, "max_state_diff": report.max_state_diff,
            "logits_relative": logits_rel, "state_relative": state_rel,
            "logits_share_of_limit": logits_share, "state_share_of_limit": state_share,
            "stepwise_diff": report.stepwise_max_diff, "greedy_chars": report.greedy_chars,
            "greedy_near_tie_at": report.greedy_near_tie_at,
            "worst_share_of_limit": report.worst_fraction,
            "old_gate_passes": bool(report.max_logits_diff <= 1e-4
                                    and report.max_state_diff <= OLD_STATE_TOL)}


def run_case(case: Case, work: Path) -> dict[str, object]:
    corpus = work / f"{case.corpus}.txt"
    if not corpus.exists():
        corpus.write_text(SHAPES[case.corpus](), encoding="utf-8")
    run = work / f"run-{case.corpus}-{case.size}-{case.seed}"
    overrides = {**SIZES[case.size], "seed": case.seed}
    start = time.perf_counter()
    train(RunRequest(out=run, data=corpus, preset="tiny", overrides=overrides, device="cpu",
                     show_progress=False))
    row: dict[str, object] = {"corpus": case.corpus, "size": case.size, "seed": case.seed}
    try:
        result = export_run(ExportRequest(run_dir=run, out=work / f"art-{run.name}"))
    except ParityError as err:
        return {**row, "refused": str(err)}
    return {**row, "seconds": round(time.perf_counter() - start, 1), **figures(result.parity)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/parity_study.json"))
    parser.add_argument("--limit", type=int, default=None, help="Only the first N cases.")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in default_cases()[: args.limit]:
            row = run_case(case, Path(tmp))
            rows.append(row)
            print(json.dumps(row, allow_nan=False), flush=True)
    exported = [r for r in rows if "refused" not in r]
    summary: dict[str, float | int] = {
        key: max(float(r[key]) for r in exported)  # type: ignore[arg-type]
        for key in ("logits_relative", "state_relative", "worst_share_of_limit")}
    summary.update(models=len(rows), refused=len(rows) - len(exported),
                   old_gate_would_refuse=sum(not r["old_gate_passes"] for r in exported))
    print(json.dumps(summary, allow_nan=False))
    atomic_write_text(args.out, json.dumps({"summary": summary, "rows": rows}, indent=1,
                                           allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
