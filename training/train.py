"""The training loop: AdamW, a stored learning-rate schedule, clipping, bounded evaluation,
exact checkpoints.

Read top to bottom: plan the run (rank 0 encodes or checks the corpus and shares the plan), map
the token file, build the model, then loop. The same code runs as one process or as a rank
under torchrun (see distributed.py). During training each evaluation covers a fixed subset of
the validation split (`eval_chars`); at the end the best checkpoint is scored on the whole split.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .averaging import WeightAverage
from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    ResumeState,
    TrainingState,
    find_checkpoint,
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_from_tensors,
    resume_state,
    save_checkpoint,
    split_training_weights,
    update_state,
)
from .config import TrainConfig
from .corpus import TOKENS_RECORD
from .corpus_stamp import STAMP_FILE
from .data import Splits, eval_spans, sample_batch
from .distributed import DistContext, init_distributed, shutdown_distributed
from .errors import StoppedBeforeStart, TrainingDiverged, UsageError
from .evaluate import bits_per_char, stream_nll
from .finetune import initial_weights
from .loss import training_loss
from .model import CharLSTM, count_parameters
from .plan import Plan, RunRequest, plan_new_run, plan_resume
from .plotting import save_loss_curve
from .progress import TrainProgress
from .records import finite_or_none
from .rng import gather_rng, restore_rng, weight_checksums
from .rundir import METRICS_FILE, RUN_FILE, check_fresh_run_dir, read_metrics, write_metrics
from .schedule import learning_rate_at
from .signals import stop_on_signals

__all__ = ["RunRequest", "TrainResult", "learning_rate_at", "make_optimizer", "train"]

LOG_EVERY = 10


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val_loss: float  # on the evaluation subset, as compared during training
    last_val_loss: float
    stopped: str  # "finished" | "early-stop" | "time-limit" | "signal"
    parameters: int
    signal: int = 0
    whole_val_loss: float | None = None  # the best checkpoint on the whole validation split
    eval_chars: int = 0  # characters one evaluation covers
    val_chars: int = 0  # characters in the validation split


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but PyTorch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def make_optimizer(model: CharLSTM, config: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases are left alone."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    keep = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.beta1, config.beta2))


def train(request: RunRequest) -> TrainResult:
    """Run (or resume) one training run to completion, early stop, or signal."""
    device = resolve_device(request.device)
    if request.threads is not None:
        if request.threads < 1:
            raise UsageError(f"threads must be at least 1, got {request.threads}")
        torch.set_num_threads(request.threads)
    if (request.extend or request.override) and not request.resume:
        raise UsageError("--extend and --override change a run being resumed: use them "
                         "with --resume")
    if request.init_from is not None and request.resume:
        raise UsageError("--init-from starts a new run; a resumed run continues from its own "
                         "checkpoint (drop --init-from)")
    run_dir = request.out
    created = not run_dir.exists()
    if not request.resume:
        check_fresh_run_dir(run_dir)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        with stop_on_signals() as flag:
            try:
                plan, checkpoint, resume = make_plan(request, dist, device)
                result = _train_loop(request, device, dist, plan, checkpoint, resume, flag)
            except StoppedBeforeStart as err:
                raise StoppedBeforeStart(err.signum, stop_advice(request, created,
                                                                 dist)) from None
            except TrainingDiverged as err:
                raise TrainingDiverged(err.step, err.what,
                                       divergence_advice(run_dir, plan, created, dist)) from None
        dist.barrier()  # rank 0 may still be writing; leave together so Gloo tears down cleanly
        return result
    finally:
        shutdown_distributed(dist)


def stop_advice(request: RunRequest, created: bool, dist: DistContext) -> str:
    """A stop before the first step: a resumed run is as it was; a new one is removed (the
    same rule as a divergence before any checkpoint), so the same command starts it again."""
    if request.resume:
        return f"the run is as it was: bard train --resume {request.out}"
    if dist.is_main:
        remove_unfinished_run(request.out, created)
    return (f"nothing to resume, so what it had written in {request.out} was removed; the "
            "same command starts it again")


def make_plan(request: RunRequest, dist: DistContext, device: torch.device
              ) -> tuple[Plan, Checkpoint | None, ResumeState | None]:
    """Rank 0 plans (encodes the corpus, checks the run directory); the others receive the
    plan, or rank 0's one-line error, and load the checkpoint it checked."""
    say = progress_printer(request.show_progress and dist.is_main)
    shared: dict[str, Any] | None = None
    checkpoint = resume = None
    if dist.is_main:
        try:
            if request.resume:
                plan, checkpoint, resume = plan_resume(request, say)
            else:
                plan = plan_new_run(request, say)
            shared = {"plan": plan.to_json()}
        except UsageError as err:
            shared = {"error": str(err)}
            dist.share_json(shared, device)
            raise
    shared = dist.share_json(shared, device)
    if "error" in shared:
        raise UsageError(shared["error"])
    if dist.is_main:
        return plan, checkpoint, resume
    plan = Plan.from_json(shared["plan"], request.out)
    if request.resume:
        checkpoint = load_checkpoint(find_checkpoint(request.out, "last"))
        resume = resume_state(checkpoint)
    return plan, checkpoint, resume


def progress_printer(enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            print(f"bard train: {message}", file=sys.stderr, flush=True)
    return say


def divergence_advice(run_dir: Path, plan: Plan, created: bool, dist: DistContext) -> str:
    """Only what works: resume from the last good checkpoint with a lower rate, or, when no
    checkpoint was written, start over (the files this run wrote are removed so --out can be
    reused)."""
    lr = plan.train_config.learning_rate
    pointer = run_dir / CHECKPOINT_DIR / "last.json"
    if pointer.exists():
        step = load_checkpoint(find_checkpoint(run_dir, "last")).step
        return (f"the last good checkpoint (step {step}) is kept; continue from it with a lower "
                f"learning rate: bard train --resume {run_dir} --override --learning-rate "
                f"{lr / 2:g} (or a lower --grad-clip)")
    if dist.is_main:
        remove_unfinished_run(run_dir, created)
    where = f"{run_dir} was removed" if created else f"the files it wrote in {run_dir} were removed"
    return (f"no checkpoint had been written, so {where}; start again with a learning rate "
            f"below {lr:g} (--learning-rate) or a lower --grad-clip")


def remove_unfinished_run(run_dir: Path, created: bool) -> None:
    """Remove what this run wrote before its first checkpoint, and nothing else: its files,
    and the temporary files of their atomic writes (a signal that lands just as one is
    created, before the writer can own it, leaves it behind)."""
    for name in (RUN_FILE, METRICS_FILE, TOKENS_RECORD, STAMP_FILE, "loss_curve.png",
                 "corpus.uint*.bin"):
        for path in [*run_dir.glob(name), *run_dir.glob(f".{name}.*.tmp")]:
            path.unlink(missing_ok=True)
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if created and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _train_loop(request: RunRequest, device: torch.device, dist: DistContext, plan: Plan,
                checkpoint: Checkpoint | None, resume: ResumeState | None,
                flag: dict[str, int]) -> TrainResult:
    return Trainer(request, device, dist, plan, checkpoint, resume, flag).run()


class Trainer:
    """One run's state between steps, and the steps: `train_step`, `evaluate_now`,
    `checkpoint`, `run`. Built from the plan and, when resuming, the checkpoint's state."""

    def __init__(self, request: RunRequest, device: torch.device, dist: DistContext,
                 plan: Plan, checkpoint: Checkpoint | None, resume: ResumeState | None,
                 flag: dict[str, int]) -> None:
        self.request, self.device, self.dist, self.plan = request, device, dist, plan
        self.run_dir = request.out
        self.cfg, self.schedule = plan.train_config, plan.schedule
        cfg = self.cfg
        torch.manual_seed(cfg.seed + dist.rank)
        self.generator = torch.Generator().manual_seed(cfg.seed + dist.rank)
        self.model = CharLSTM(plan.model_config)
        if checkpoint is None and request.init_from is not None:
            bias = None if plan.lineage is None else plan.lineage.new_row_bias
            self.model.load_state_dict(initial_weights(request.init_from, plan.model_config,
                                                       bias))
        self.model = self.model.to(device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.step, self.best_val, self.last_val = 0, math.inf, math.inf
        self.evals_since_best, self.pending_eval = 0, False
        self.metrics: list[dict[str, Any]] = []
        if checkpoint is not None and resume is not None:
            self._resume(checkpoint, resume)
        self.average = make_average(self.model, cfg, self.step, checkpoint)
        self.evaluated = self.average.model if self.average is not None else self.model
        self._split(plan)
        self.trained: torch.nn.Module = self.model
        if dist.enabled:
            self.trained = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto"
                                                    and device.type == "cuda")
        self.chars_per_step = cfg.batch_size * cfg.seq_len * dist.world_size
        self.parameters = count_parameters(self.model)
        self.stop_signal = 0
        self.flag = flag  # stop_on_signals' flag, installed by train() before planning
        self.progress = TrainProgress(enabled=request.show_progress and dist.is_main,
                                      total=cfg.max_steps, start=self.step)
        self.window_loss = torch.zeros((), device=device)
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.deadline: float | None = None  # --max-minutes, counted from run()
        self.out_of_time = False

    def _resume(self, checkpoint: Checkpoint, resume: ResumeState) -> None:
        cfg, dist = self.cfg, self.dist
        tensors, training_weights = split_training_weights(
            load_optimizer_tensors(checkpoint.path))
        self.model.load_state_dict(training_weights or checkpoint.weights)
        optimizer_from_tensors(self.optimizer, tensors, resume.optimizer_groups)
        self.step, self.best_val, self.last_val = (checkpoint.step, resume.best_val_loss,
                                                   resume.val_loss)
        self.evals_since_best, self.pending_eval = resume.evals_since_best, resume.pending_eval
        if len(resume.rng) == dist.world_size:
            restore_rng(resume.rng[dist.rank], self.generator, self.device)
        else:  # a different process count: reseed per rank, reproducibly, from the step
            torch.manual_seed(cfg.seed + 1000 * self.step + dist.rank)
            self.generator.manual_seed(cfg.seed + 1000 * self.step + dist.rank)
        self.metrics = read_metrics(self.run_dir, self.step) if dist.is_main else []

    def _split(self, plan: Plan) -> None:
        """The train/validation split and the evaluation spans (a subset, and the whole)."""
        cfg = self.cfg
        self.splits = Splits.from_tokens(plan.tokens.open(), plan.corpus.val_fraction,
                                         cfg.seq_len)
        val = len(self.splits.val)
        self.subset = eval_spans(val, cfg.val_streams, cfg.eval_chars)
        self.whole = eval_spans(val, cfg.val_streams)
        self.subset_chars = sum(b - a for a, b in self.subset)
        self.subset_label = ("the whole validation split" if self.subset == self.whole else
                             f"{self.subset_chars:,} of the {val:,} validation characters")

    # ------------------------------------------------------------------ pieces

    def stop_requested(self) -> bool:
        """Polled between evaluation chunks; a collective, so every rank stops together."""
        status = torch.tensor([float(self.flag["signal"])], device=self.device)
        self.stop_signal = int(self.dist.max_(status).item())
        return self.stop_signal != 0

    def evaluate(self, net: CharLSTM, spans: list[tuple[int, int]]) -> float | None:
        dist = self.dist
        longest = max((b - a for a, b in spans), default=0)
        result = stream_nll(net, self.splits.val, spans[dist.rank :: dist.world_size],
                            self.device, longest=longest, stop=self.stop_requested)
        if result is None:
            return None
        totals = dist.sum_(torch.tensor(result, dtype=torch.float64, device=self.device))
        return float(totals[0] / totals[1])

    def checkpoint(self, pointers: tuple[str, ...]) -> None:
        if not all(bool(torch.isfinite(p).all())
                   for net in {self.model, self.evaluated} for p in net.parameters()):
            raise TrainingDiverged(self.step, "model's weights")
        dist, cfg, plan = self.dist, self.cfg, self.plan
        rng = gather_rng(dist, self.generator, self.device)
        sums = weight_checksums(dist, self.model)
        if not dist.is_main:
            return
        if len(set(sums)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights at step {self.step}: {sums}")
        state = TrainingState(
            step=self.step, vocab=tuple(plan.vocab.chars), rank_weight_checksums=sums,
            train_config=cfg, corpus=plan.corpus, val_loss=finite_or_none(self.last_val),
            best_val_loss=finite_or_none(self.best_val),
            evals_since_best=self.evals_since_best, rng=rng, world_size=dist.world_size,
            parameters=self.parameters, schedule=self.schedule,
            pending_eval=self.pending_eval, eval_chars=self.subset_chars,
            lineage=None if plan.lineage is None else plan.lineage.to_json())
        save_checkpoint(self.run_dir, self.model, self.optimizer, state, pointers=pointers,
                        averaged=self.average.model if self.average is not None else None)
        write_metrics(self.run_dir, self.metrics)
        save_loss_curve(self.metrics, self.run_dir / "loss_curve.png")

    def announce(self) -> None:
        """Printed once the signal handlers are in place: a readiness sign."""
        cfg, dist, progress = self.cfg, self.dist, self.progress
        for line in self.plan.notes:
            progress.note(line)
        progress.note(
            f"bard train: {self.parameters:,} parameters on {self.device.type}"
            f"{' (bf16 autocast)' if self.use_bf16 else ''}, {dist.world_size} process(es), "
            f"effective batch {cfg.batch_size * dist.world_size} x {cfg.seq_len} chars, "
            f"lr {cfg.learning_rate:g} (not scaled with the process count), "
            f"{self.chars_per_step / dist.world_size:,.0f} chars/step per rank; "
            f"evaluations cover {self.subset_label}")

    # ------------------------------------------------------------------ steps

    def evaluate_now(self) -> str:
        """The pending evaluation, its metrics and checkpoint; returns why training stops
        ("signal", "early-stop", "time-limit") or ""."""
        step, progress, cfg = self.step, self.progress, self.cfg
        progress.note(f"step {step}: evaluating on {self.subset_label}")
        value = self.evaluate(self.evaluated, self.subset)
        if value is None:
            progress.note(f"signal {self.stop_signal} during the evaluation at step "
                          f"{step}: evaluation abandoned, saving a checkpoint of step "
                          f"{step} (--resume reruns the evaluation)")
            self.checkpoint(("last",))
            return "signal"
        if not math.isfinite(value):
            raise TrainingDiverged(step, "validation loss")
        self.pending_eval = False
        self.last_val = value
        improved = value < self.best_val
        if improved:
            self.best_val, self.evals_since_best = value, 0
        else:
            self.evals_since_best += 1
        self.metrics.append({"step": step, "split": "val", "loss": value,
                             "bpc": bits_per_char(value), "chars": self.subset_chars})
        progress.note(f"step {step}: val loss {value:.4f} nats/char "
                      f"({bits_per_char(value):.4f} bpc){' *best*' if improved else ''}")
        self.checkpoint(("last", "best") if improved else ("last",))
        self.window_start = time.perf_counter()
        if cfg.patience is not None and self.evals_since_best >= cfg.patience:
            progress.note(f"early stop: no improvement in {cfg.patience} evaluations")
            return "early-stop"
        if self.out_of_time:
            progress.note(f"time limit: {cfg.max_minutes:g} minutes have passed")
            return "time-limit"
        return ""

    def train_step(self) -> str:
        """One optimizer step on one batch; returns "signal" if a signal arrived, else ""."""
        cfg, device = self.cfg, self.device
        lr = self.schedule.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = sample_batch(self.splits.train, cfg.batch_size, cfg.seq_len,
                                       self.generator)
        inputs, targets = inputs.to(device), targets.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            nll, _, outputs = self.trained(inputs, with_outputs=True, targets=targets)
        objective, loss = training_loss(nll, outputs, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        status = torch.stack([(~torch.isfinite(objective)).float(),
                              (~torch.isfinite(grad_norm)).float(),
                              torch.tensor(float(self.flag["signal"]), device=device)])
        bad_loss, bad_grad, signum = self.dist.max_(status).tolist()
        if bad_loss or bad_grad:
            raise TrainingDiverged(self.step + 1, "training loss" if bad_loss
                                   else "gradient norm")
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        self.window_loss += loss.detach()
        self.window_steps += 1
        if self.step % LOG_EVERY == 0 or self.step == cfg.max_steps:
            self.log_window(lr)
        self.pending_eval = self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps
        if self.deadline is not None:  # a collective: every rank stops at the same step
            late = torch.tensor([float(time.monotonic() >= self.deadline)], device=device)
            self.out_of_time = bool(self.dist.max_(late).item())
            self.pending_eval = self.pending_eval or self.out_of_time
        if not signum:
            return ""
        self.stop_signal = int(signum)
        self.progress.note(f"signal {int(signum)} at step {self.step}: saving a checkpoint")
        self.checkpoint(("last",))
        return "signal"

    def log_window(self, lr: float) -> None:
        """The mean training loss and speed since the last log line."""
        elapsed = time.perf_counter() - self.window_start
        mean_loss = float(self.window_loss) / self.window_steps
        speed = self.chars_per_step * self.window_steps / max(elapsed, 1e-9)
        self.metrics.append({"step": self.step, "split": "train", "loss": mean_loss, "lr": lr,
                             "chars_per_s": speed,
                             "chars_per_s_per_rank": speed / self.dist.world_size})
        self.progress.update(self.step, mean_loss, speed)
        self.window_loss.zero_()
        self.window_start, self.window_steps = time.perf_counter(), 0

    def run(self) -> TrainResult:
        """Evaluate when due, else step, until the last step, an early stop or a signal;
        then score the best checkpoint on the whole validation split."""
        stopped = ""
        if self.cfg.max_minutes is not None:
            self.deadline = time.monotonic() + 60 * self.cfg.max_minutes
        self.trained.train()
        self.window_start = time.perf_counter()
        self.flag["started"] = 1  # from here a signal is a flag, answered with a checkpoint
        with self.progress:
            self.announce()
            while not stopped:
                if self.pending_eval:
                    stopped = self.evaluate_now()
                elif self.step >= self.cfg.max_steps:
                    stopped = "finished"
                else:
                    stopped = self.train_step()
            whole_val = None
            if stopped != "signal":
                whole_val = score_whole_split(self.run_dir, self.dist, self.device, self.plan,
                                              self.splits, self.whole, self.subset,
                                              self.evaluate, self.metrics, self.progress)
                if whole_val is None:
                    stopped = "signal"
        return TrainResult(self.run_dir, self.step, self.best_val, self.last_val, stopped,
                           self.parameters, self.stop_signal, whole_val, self.subset_chars,
                           len(self.splits.val))


def make_average(model: CharLSTM, cfg: TrainConfig, step: int,
                 checkpoint: Checkpoint | None) -> WeightAverage | None:
    """The weight average (--ema-decay), continued from the checkpoint's model when resuming
    (with an average, a checkpoint's model is the average)."""
    if cfg.ema_decay == 0:
        return None
    average = WeightAverage(model, cfg.ema_decay, updates=step)
    if checkpoint is not None:
        average.load_state_dict(checkpoint.weights)
    return average


def score_whole_split(run_dir: Path, dist: DistContext, device: torch.device, plan: Plan,
                      splits: Splits, whole: list[tuple[int, int]],
                      subset: list[tuple[int, int]],
                      evaluate: Callable[[CharLSTM, list[tuple[int, int]]], float | None],
                      metrics: list[dict[str, Any]], progress: TrainProgress) -> float | None:
    """The best checkpoint's loss on the whole validation split (what export records), kept
    in its state.json; None if a signal stopped it (a resumed run scores it again)."""
    dist.barrier()  # the best checkpoint is on disk for every rank
    best_dir = find_checkpoint(run_dir, "best")
    best = load_checkpoint(best_dir)
    recorded = best.state.get("val_loss_whole_split")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded)
    if subset == whole and isinstance(best.state.get("val_loss"), (int, float)):
        value: float | None = float(best.state["val_loss"])  # the same streams, already scored
    else:
        progress.note(f"final: scoring the best checkpoint (step {best.step}) on the whole "
                      f"validation split ({len(splits.val):,} characters)")
        net = CharLSTM(plan.model_config).to(device)
        net.load_state_dict(best.weights)
        value = evaluate(net, whole)
        if value is None:
            progress.note("signal during the final evaluation: abandoned (--resume redoes it)")
            return None
    if not math.isfinite(value):
        raise TrainingDiverged(best.step, "validation loss on the whole split")
    if dist.is_main:
        update_state(best_dir, val_loss_whole_split=value,
                     val_chars_whole_split=len(splits.val))
        metrics.append({"step": best.step, "split": "val_whole", "loss": value,
                        "bpc": bits_per_char(value), "chars": len(splits.val)})
        write_metrics(run_dir, metrics)
    progress.note(f"final: best checkpoint (step {best.step}) on the whole validation split "
                  f"({len(splits.val):,} characters): {value:.4f} nats/char "
                  f"({bits_per_char(value):.4f} bpc)")
    return value
