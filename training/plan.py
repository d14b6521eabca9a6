"""What a run will do, decided before the first step: the corpus encoded (or its token file
checked), the configs, and, on resume, which changes the user asked for and whether they are
allowed. Rank 0 works it out and shares it with the other ranks as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bard_sdk.vocab import Vocabulary

from .checkpoint import Checkpoint, ResumeState, find_checkpoint, load_checkpoint, resume_state
from .config import ModelConfig, TrainConfig, build_configs
from .corpus import (
    CorpusSource,
    TokenFile,
    describe_split,
    prepare_tokens,
    scan_corpus,
    write_tokens,
)
from .corpus_stamp import check_corpus_unchanged, write_stamp
from .data import split_point
from .errors import UsageError
from .finetune import (
    SAMPLE_CHARS,
    Parent,
    extend_vocabulary,
    lineage_of,
    new_character_bias,
)
from .lineage import Lineage
from .records import Fields
from .rundir import (
    CorpusRecord,
    RunFile,
    parse_run,
    read_metrics,
    read_run_file,
    run_record,
    write_run_file,
)
from .schedule import Schedule

RESUMABLE = ("max_steps", "patience", "eval_interval", "max_minutes")
OVERRIDABLE = ("learning_rate", "min_learning_rate", "grad_clip")

Note = Callable[[str], None]


@dataclass
class RunRequest:
    """What the user asked for; `overrides` holds config fields given explicitly (None: not
    given). `extend` allows a --max-steps beyond the run's schedule; `override` allows new
    learning rates or gradient clip on resume (after a divergence)."""

    out: Path
    data: Path | list[Path] | None = None  # files and folders (see corpus.CorpusSource)
    preset: str | None = None  # None: "tiny", or "finetune" with init_from
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    show_progress: bool = True
    extend: bool = False
    override: bool = False
    init_from: Parent | None = None  # a model to fine-tune (export.reimport.load_parent)


@dataclass(frozen=True)
class Plan:
    """Everything every rank needs to start (the effective configs, not run.json's first)."""

    corpus: CorpusRecord
    model_config: ModelConfig
    train_config: TrainConfig
    schedule: Schedule
    vocab: Vocabulary
    tokens: TokenFile
    notes: list[str]
    lineage: Lineage | None = None

    def to_json(self) -> dict[str, Any]:
        run = run_record(RunFile(self.corpus, self.model_config, self.train_config,
                                 self.schedule, [], self.lineage))
        return {**run, "vocab": self.vocab.chars, "notes": self.notes,
                "tokens": {"file": self.tokens.path.name, "dtype": self.tokens.dtype.str,
                           "length": self.tokens.length}}

    @classmethod
    def from_json(cls, record: dict[str, Any], run_dir: Path) -> Plan:
        run = parse_run(record, "run plan")
        tokens = Fields(record, "run plan").obj("tokens")
        schedule = run.schedule or Schedule.from_config(run.train_config)
        return cls(run.corpus, run.model_config, run.train_config, schedule,
                   Vocabulary(record["vocab"]),
                   TokenFile(run_dir / str(tokens.string("file")),
                             np.dtype(str(tokens.string("dtype"))), tokens.integer("length", 0)),
                   list(record["notes"]), run.parent)


def plan_new_run(request: RunRequest, note: Note) -> Plan:
    """Scan the corpus, check every setting, then encode the corpus and write run.json.
    Nothing is written before every check has passed. With `init_from` the architecture is
    the parent's and the vocabulary the parent's plus the corpus's new characters."""
    source = CorpusSource(request.data)
    scan = scan_corpus(source)
    parent, vocab, added = request.init_from, scan.vocabulary, []
    if parent is not None:
        vocab, added = extend_vocabulary(parent.vocab, scan.vocabulary)
    preset = request.preset or ("finetune" if parent is not None else "tiny")
    model_config, train_config = build_configs(
        preset, len(vocab), request.overrides,
        parent.model_config if parent is not None else None)
    cut = split_point(scan.length, train_config.val_fraction, train_config.seq_len)
    several = len(source.inputs) > 1
    corpus = CorpusRecord(name=scan.name, sha256=scan.sha256, length=scan.length,
                          path=str(source.path.resolve()) if source.path else None,
                          val_fraction=train_config.val_fraction,
                          inputs=[str(p.resolve()) for p in source.inputs] if several else None,
                          documents=len(scan.documents))
    schedule = Schedule.from_config(train_config)
    notes = [describe_split(scan, train_config.val_fraction, cut)]
    try:
        tokens = write_tokens(request.out, source, vocab, scan.sha256, note)
        write_stamp(request.out, source)
        lineage = None
        if parent is not None:
            new_bias = None if not added else new_character_bias(
                parent, model_config, tokens.open()[: min(cut, SAMPLE_CHARS)])
            lineage = lineage_of(parent, added, new_bias)
            notes.append(lineage.describe())
        write_run_file(request.out, RunFile(corpus, model_config, train_config, schedule, [],
                                            lineage))
    except OSError as err:
        raise UsageError(f"cannot write the run directory {request.out}: {err}") from None
    return Plan(corpus, model_config, train_config, schedule, vocab, tokens, notes, lineage)


def plan_resume(request: RunRequest, note: Note) -> tuple[Plan, Checkpoint, ResumeState]:
    """Check the run directory, reuse (or rebuild) the token file, apply allowed changes."""
    run_dir = request.out
    run = read_run_file(run_dir)
    checkpoint = load_checkpoint(find_checkpoint(run_dir, "last"))
    state = resume_state(checkpoint)
    read_metrics(run_dir, checkpoint.step)  # checked here, before any rank starts
    if checkpoint.corpus.sha256 != run.corpus.sha256:
        raise UsageError(f"{run_dir}: run.json and the checkpoint name different corpora")
    vocab = Vocabulary(checkpoint.vocab)
    corpus_source = CorpusSource(request.data or run.corpus.sources())
    train_config, schedule, changes = resume_changes(checkpoint, state.schedule, request)
    check_corpus_unchanged(run_dir, corpus_source, run.corpus.sha256)
    try:
        tokens = prepare_tokens(run_dir, corpus_source, run.corpus.sha256, vocab,
                                note, check_source=request.data is not None)
        if changes:
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            history = run.history + [{**c, "time": stamp} for c in changes]
            write_run_file(run_dir, dataclasses.replace(run, history=history))
    except OSError as err:
        raise UsageError(f"cannot write the run directory {run_dir}: {err}") from None
    notes = [c["note"] for c in changes]
    plan = Plan(run.corpus, checkpoint.model_config, train_config, schedule, vocab, tokens,
                notes, run.parent)
    return plan, checkpoint, state


def allowed_changes(current: dict[str, Any], request: RunRequest) -> dict[str, Any]:
    """The settings the request changes, refused unless resuming may change them."""
    changed = {k: v for k, v in request.overrides.items()
               if v is not None and current.get(k, v) != v}
    unknown = sorted(k for k in request.overrides if k not in current)
    if unknown:
        raise UsageError(f"unknown settings: {', '.join(unknown)}")
    allowed = set(RESUMABLE) | (set(OVERRIDABLE) if request.override else set())
    refused = sorted(set(changed) - allowed)
    if refused and set(refused) <= set(OVERRIDABLE):
        raise UsageError(f"cannot change {', '.join(refused)} when resuming without --override "
                         "(pass --override to lower the learning rate or gradient clip, e.g. "
                         "after a divergence)")
    if refused:
        raise UsageError(f"cannot change {', '.join(refused)} when resuming; only "
                         f"{', '.join(RESUMABLE)} may change (and {', '.join(OVERRIDABLE)} "
                         "with --override)")
    return changed


def resume_changes(checkpoint: Checkpoint, schedule: Schedule, request: RunRequest
                   ) -> tuple[TrainConfig, Schedule, list[dict[str, Any]]]:
    """The resumed config and schedule, and a record of each explicit change.

    Stopping earlier, patience and the evaluation interval may change freely. New learning
    rates or gradient clip need --override; a --max-steps beyond the schedule needs --extend.
    Anything else would make the resumed run a different run, and is refused.
    """
    current = {**dataclasses.asdict(checkpoint.model_config),
               **dataclasses.asdict(checkpoint.train_config)}
    changed = allowed_changes(current, request)
    step = checkpoint.step
    config = dataclasses.replace(checkpoint.train_config, **changed)
    config.validate()
    changes: list[dict[str, Any]] = []
    if request.override:
        new = {k: changed[k] for k in OVERRIDABLE if k in changed}
        if not new:
            raise UsageError("--override needs a new --learning-rate, --min-learning-rate or "
                             "--grad-clip")
        before = schedule.lr_at(step)
        schedule = schedule.overridden(new.get("learning_rate"), new.get("min_learning_rate"))
        config = dataclasses.replace(config, learning_rate=schedule.learning_rate,
                                     min_learning_rate=schedule.min_learning_rate)
        config.validate()
        said = ", ".join(f"{k} {current[k]:g} -> {getattr(config, k):g}" for k in new)
        changes.append({"step": step, "change": "override",
                        "values": {k: [current[k], getattr(config, k)] for k in new},
                        "note": f"override at step {step}: {said}; the learning rate for the "
                                f"next step goes from {before:.4g} to "
                                f"{schedule.lr_at(step):.4g}"})
    if config.max_steps > schedule.total_steps:
        if not request.extend:
            raise UsageError(
                f"--max-steps {config.max_steps} is beyond this run's schedule of "
                f"{schedule.total_steps} steps; pass --extend to train past it (the learning "
                f"rate is then re-planned from step {step}: a cosine from its current value "
                "down to the minimum at the new --max-steps)")
        before, old_total = schedule.lr_at(step), schedule.total_steps
        schedule = schedule.extended(step, config.max_steps)
        changes.append({"step": step, "change": "extend", "max_steps": [old_total,
                                                                          config.max_steps],
                        "note": f"extend at step {step}: {old_total} -> {config.max_steps} "
                                f"steps; the learning rate is re-planned as a cosine from "
                                f"{before:.4g} down to {schedule.min_learning_rate:.4g} at "
                                f"step {config.max_steps}"})
    elif request.extend:
        raise UsageError(f"--extend needs a --max-steps beyond this run's schedule of "
                         f"{schedule.total_steps} steps")
    return config, schedule, changes
