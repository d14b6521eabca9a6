"""The files of a run directory besides checkpoints: `run.json` and `metrics.jsonl`.

`run.json` says what the run is (corpus, configs, the learning-rate schedule it started with)
and keeps a `history` of every explicit change made on resume (--extend, --override), so a run
directory always tells how its model was made.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig
from .errors import UsageError
from .fsutil import atomic_write_text
from .lineage import Lineage
from .records import Fields, dataclass_from_json, dumps, parse_json, read_json
from .schedule import Schedule

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class CorpusRecord:
    """Which text a run was trained on, and where its validation split starts."""

    name: str
    sha256: str  # of the joined text: every file's bytes, U+001E between two
    length: int
    path: str | None  # the one --data given (file or folder); None: the bundled corpus
    val_fraction: float
    inputs: list[str] | None = None  # every --data, in order, when there were several
    documents: int = 1

    def sources(self) -> list[Path] | None:
        """The --data paths to read the corpus from again (None: the bundled corpus)."""
        if self.inputs:
            return [Path(p) for p in self.inputs]
        return None if self.path is None else [Path(self.path)]

    def validate(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise UsageError(f"field 'sha256' must be 64 hex digits, got {self.sha256!r}")
        if self.length < 1:
            raise UsageError(f"field 'length' must be at least 1, got {self.length}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"field 'val_fraction' must be in (0, 1), got {self.val_fraction}")
        if self.documents < 1:
            raise UsageError(f"field 'documents' must be at least 1, got {self.documents}")


@dataclass(frozen=True)
class RunFile:
    corpus: CorpusRecord
    model_config: ModelConfig
    train_config: TrainConfig
    schedule: Schedule | None
    history: list[dict[str, Any]]
    parent: Lineage | None = None  # the model a fine-tuning run started from


def check_fresh_run_dir(run_dir: Path) -> None:
    if (run_dir / RUN_FILE).exists():
        raise UsageError(
            f"{run_dir} already holds a training run; pass --resume {run_dir} to continue it "
            "or choose another --out"
        )
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"{run_dir} exists and is not an empty directory; choose another --out")


def run_record(run: RunFile) -> dict[str, Any]:
    return {"corpus": dataclasses.asdict(run.corpus),
            "model_config": dataclasses.asdict(run.model_config),
            "train_config": dataclasses.asdict(run.train_config),
            "schedule": None if run.schedule is None else dataclasses.asdict(run.schedule),
            "history": run.history,
            **({} if run.parent is None else {"parent": run.parent.to_json()})}


def parse_run(record: Any, where: str) -> RunFile:
    fields = Fields(record, where)
    schedule = fields.record.get("schedule")
    history = fields.array("history") if "history" in fields.record else []
    return RunFile(
        corpus=dataclass_from_json(CorpusRecord, fields.get("corpus"), f"{where} corpus"),
        model_config=dataclass_from_json(ModelConfig, fields.get("model_config"),
                                         f"{where} model_config"),
        train_config=dataclass_from_json(TrainConfig, fields.get("train_config"),
                                         f"{where} train_config"),
        schedule=None if schedule is None else dataclass_from_json(
            Schedule, schedule, f"{where} schedule"),
        history=history,
        parent=Lineage.from_json(fields.record.get("parent"), f"{where} parent"))


def read_run_file(run_dir: Path) -> RunFile:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} holds no training run to resume (no {RUN_FILE})")
    return parse_run(read_json(path), str(path))


def write_run_file(run_dir: Path, run: RunFile) -> None:
    atomic_write_text(run_dir / RUN_FILE, dumps(run_record(run), indent=1) + "\n")


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / METRICS_FILE, "".join(dumps(r) + "\n" for r in records))


def read_metrics(run_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    """The metrics of steps up to the checkpoint being resumed (later ones are redone)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        fields = Fields(parse_json(line, where), where)
        fields.integer("step", 0)
        fields.string("split")
        records.append(fields.record)
    return [r for r in records if r["step"] <= up_to_step]
