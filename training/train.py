"""The training loop: AdamW, a stored learning-rate schedule, clipping, bounded evaluation,
exact checkpoints.

Read top to bottom: plan the run (rank 0 encodes or checks the corpus and shares the plan), map
the token file, build the model, then loop. The same code runs as one process or as a rank
under torchrun (see distributed.py). During training each evaluation covers a fixed subset of
the validation split (`eval_chars`); at the end the best checkpoint is scored on the whole split.
"""

from __future__ import annotations

import dataclasses
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
from .data import Splits, eval_spans, sample_batch
from .distributed import DistContext, init_distributed, shutdown_distributed
from .errors import TrainingDiverged, UsageError
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
        plan, checkpoint, resume = make_plan(request, dist, device)
        try:
            result = _train_loop(request, device, dist, plan, checkpoint, resume)
        except TrainingDiverged as err:
            raise TrainingDiverged(err.step, err.what,
                                   divergence_advice(run_dir, plan, created, dist)) from None
        dist.barrier()  # rank 0 may still be writing; leave together so Gloo tears down cleanly
        return result
    finally:
        shutdown_distributed(dist)


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
    """Remove what this run wrote before its first checkpoint, and nothing else."""
    for name in (RUN_FILE, METRICS_FILE, TOKENS_RECORD, "loss_curve.png"):
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("corpus.uint*.bin"):
        path.unlink(missing_ok=True)
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if created and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _train_loop(request: RunRequest, device: torch.device, dist: DistContext, plan: Plan,
                checkpoint: Checkpoint | None, resume: ResumeState | None) -> TrainResult:
    run_dir = request.out
    cfg, schedule = plan.train_config, plan.schedule
    torch.manual_seed(cfg.seed + dist.rank)
    generator = torch.Generator().manual_seed(cfg.seed + dist.rank)
    model = CharLSTM(plan.model_config)
    if checkpoint is None and request.init_from is not None:
        bias = None if plan.lineage is None else plan.lineage.new_row_bias
        model.load_state_dict(initial_weights(request.init_from, plan.model_config, bias))
    model = model.to(device)
    optimizer = make_optimizer(model, cfg)
    step, best_val, evals_since_best, last_val, pending_eval = 0, math.inf, 0, math.inf, False
    metrics: list[dict[str, Any]] = []
    if checkpoint is not None and resume is not None:
        tensors, training_weights = split_training_weights(
            load_optimizer_tensors(checkpoint.path))
        model.load_state_dict(training_weights or checkpoint.weights)
        optimizer_from_tensors(optimizer, tensors, resume.optimizer_groups)
        step, best_val, last_val = checkpoint.step, resume.best_val_loss, resume.val_loss
        evals_since_best, pending_eval = resume.evals_since_best, resume.pending_eval
        if len(resume.rng) == dist.world_size:
            restore_rng(resume.rng[dist.rank], generator, device)
        else:  # a different process count: reseed per rank, reproducibly, from the step
            torch.manual_seed(cfg.seed + 1000 * step + dist.rank)
            generator.manual_seed(cfg.seed + 1000 * step + dist.rank)
        metrics = read_metrics(run_dir, step) if dist.is_main else []

    average = make_average(model, cfg, step, checkpoint)
    evaluated = average.model if average is not None else model
    splits = Splits.from_tokens(plan.tokens.open(), plan.corpus.val_fraction, cfg.seq_len)
    subset = eval_spans(len(splits.val), cfg.val_streams, cfg.eval_chars)
    whole = eval_spans(len(splits.val), cfg.val_streams)
    subset_chars = sum(b - a for a, b in subset)
    subset_label = ("the whole validation split" if subset == whole else
                    f"{subset_chars:,} of the {len(splits.val):,} validation characters")
    trained: torch.nn.Module = model
    if dist.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    chars_per_step = cfg.batch_size * cfg.seq_len * dist.world_size
    parameters = count_parameters(model)
    stop_signal = [0]

    def stop_requested() -> bool:
        """Polled between evaluation chunks; a collective, so every rank stops together."""
        status = torch.tensor([float(flag["signal"])], device=device)
        stop_signal[0] = int(dist.max_(status).item())
        return stop_signal[0] != 0

    def evaluate(net: CharLSTM, spans: list[tuple[int, int]]) -> float | None:
        longest = max((b - a for a, b in spans), default=0)
        result = stream_nll(net, splits.val, spans[dist.rank :: dist.world_size], device,
                            longest=longest, stop=stop_requested)
        if result is None:
            return None
        totals = dist.sum_(torch.tensor(result, dtype=torch.float64, device=device))
        return float(totals[0] / totals[1])

    def checkpoint_now(pointers: tuple[str, ...]) -> None:
        if not all(bool(torch.isfinite(p).all())
                   for net in {model, evaluated} for p in net.parameters()):
            raise TrainingDiverged(step, "model's weights")
        rng = gather_rng(dist, generator, device)
        sums = weight_checksums(dist, model)
        if not dist.is_main:
            return
        if len(set(sums)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights at step {step}: {sums}")
        state = {"step": step, "vocab": plan.vocab.chars, "rank_weight_checksums": sums,
                 "train_config": dataclasses.asdict(cfg),
                 "corpus": dataclasses.asdict(plan.corpus),
                 "val_loss": finite_or_none(last_val), "best_val_loss": finite_or_none(best_val),
                 "evals_since_best": evals_since_best, "rng": rng,
                 "world_size": dist.world_size, "parameters": parameters,
                 "schedule": dataclasses.asdict(schedule), "pending_eval": pending_eval,
                 "eval_chars": subset_chars,
                 **({} if plan.lineage is None else {"lineage": plan.lineage.to_json()})}
        save_checkpoint(run_dir, model, optimizer, state, pointers=pointers,
                        averaged=average.model if average is not None else None)
        write_metrics(run_dir, metrics)
        save_loss_curve(metrics, run_dir / "loss_curve.png")

    progress = TrainProgress(enabled=request.show_progress and dist.is_main,
                             total=cfg.max_steps, start=step)
    stopped = ""
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    out_of_time = False
    trained.train()
    window_loss = torch.zeros((), device=device)
    window_start, window_steps = time.perf_counter(), 0
    with stop_on_signals() as flag, progress:
        for line in plan.notes:
            progress.note(line)
        progress.note(  # printed once the signal handlers are in place: a readiness sign
            f"bard train: {parameters:,} parameters on {device.type}"
            f"{' (bf16 autocast)' if use_bf16 else ''}, {dist.world_size} process(es), "
            f"effective batch {cfg.batch_size * dist.world_size} x {cfg.seq_len} chars, "
            f"lr {cfg.learning_rate:g} (not scaled with the process count), "
            f"{chars_per_step / dist.world_size:,.0f} chars/step per rank; "
            f"evaluations cover {subset_label}")
        while not stopped:
            if pending_eval:
                progress.note(f"step {step}: evaluating on {subset_label}")
                value = evaluate(evaluated, subset)
                if value is None:
                    stopped = "signal"
                    progress.note(f"signal {stop_signal[0]} during the evaluation at step "
                                  f"{step}: evaluation abandoned, saving a checkpoint of step "
                                  f"{step} (--resume reruns the evaluation)")
                    checkpoint_now(("last",))
                    break
                if not math.isfinite(value):
                    raise TrainingDiverged(step, "validation loss")
                pending_eval = False
                last_val = value
                improved = last_val < best_val
                if improved:
                    best_val, evals_since_best = last_val, 0
                else:
                    evals_since_best += 1
                metrics.append({"step": step, "split": "val", "loss": last_val,
                                "bpc": bits_per_char(last_val), "chars": subset_chars})
                progress.note(f"step {step}: val loss {last_val:.4f} nats/char "
                              f"({bits_per_char(last_val):.4f} bpc)"
                              f"{' *best*' if improved else ''}")
                checkpoint_now(("last", "best") if improved else ("last",))
                window_start = time.perf_counter()
                if cfg.patience is not None and evals_since_best >= cfg.patience:
                    stopped = "early-stop"
                    progress.note(f"early stop: no improvement in {cfg.patience} evaluations")
                elif out_of_time:
                    stopped = "time-limit"
                    progress.note(f"time limit: {cfg.max_minutes:g} minutes have passed")
                continue
            if step >= cfg.max_steps:
                stopped = "finished"
                break
            lr = schedule.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = sample_batch(splits.train, cfg.batch_size, cfg.seq_len, generator)
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits, _, outputs = trained(inputs, with_outputs=True)
            objective, loss = training_loss(logits, targets, outputs, cfg)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            status = torch.stack([(~torch.isfinite(objective)).float(),
                                  (~torch.isfinite(grad_norm)).float(),
                                  torch.tensor(float(flag["signal"]), device=device)])
            bad_loss, bad_grad, signum = dist.max_(status).tolist()
            if bad_loss or bad_grad:
                raise TrainingDiverged(step + 1, "training loss" if bad_loss
                                       else "gradient norm")
            optimizer.step()
            if average is not None:
                average.update(model)
            step += 1
            window_loss += loss.detach()
            window_steps += 1
            if step % LOG_EVERY == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = float(window_loss) / window_steps
                speed = chars_per_step * window_steps / max(elapsed, 1e-9)
                metrics.append({"step": step, "split": "train", "loss": mean_loss, "lr": lr,
                                "chars_per_s": speed,
                                "chars_per_s_per_rank": speed / dist.world_size})
                progress.update(step, mean_loss, speed)
                window_loss.zero_()
                window_start, window_steps = time.perf_counter(), 0
            pending_eval = step % cfg.eval_interval == 0 or step == cfg.max_steps
            if deadline is not None:  # a collective: every rank stops at the same step
                late = torch.tensor([float(time.monotonic() >= deadline)], device=device)
                out_of_time = bool(dist.max_(late).item())
                pending_eval = pending_eval or out_of_time
            if signum:
                stopped, stop_signal[0] = "signal", int(signum)
                progress.note(f"signal {int(signum)} at step {step}: saving a checkpoint")
                checkpoint_now(("last",))
        whole_val = None
        if stopped != "signal":
            whole_val = score_whole_split(run_dir, dist, device, plan, splits, whole, subset,
                                          evaluate, metrics, progress)
            if whole_val is None:
                stopped = "signal"
    return TrainResult(run_dir, step, best_val, last_val, stopped, parameters,
                       stop_signal[0], whole_val, subset_chars, len(splits.val))


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
