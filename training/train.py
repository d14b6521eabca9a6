"""The training loop: AdamW, warm-up + cosine, clipping, evaluation, exact checkpoints.

Read top to bottom: resolve the run (new or resumed), build data and model, then loop. The same
code runs as one process or as a rank under torchrun (see distributed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import (
    RUN_FILE,
    decode_bytes,
    encode_bytes,
    find_checkpoint,
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_from_tensors,
    save_checkpoint,
)
from .config import ModelConfig, TrainConfig, build_configs
from .data import Splits, Vocabulary, read_corpus, sample_batch, split_streams, text_sha256
from .distributed import DistContext, init_distributed, shutdown_distributed
from .errors import TrainingDiverged, UsageError
from .evaluate import bits_per_char, stream_nll
from .fsutil import atomic_write_text
from .model import CharLSTM, count_parameters
from .plotting import save_loss_curve
from .progress import TrainProgress

RESUMABLE = ("max_steps", "patience", "eval_interval")
LOG_EVERY = 10


@dataclass
class RunRequest:
    """What the user asked for; `overrides` holds config fields given explicitly."""

    out: Path
    data: Path | None = None
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    show_progress: bool = True


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val_loss: float
    last_val_loss: float
    stopped: str  # "finished" | "early-stop" | "signal"
    parameters: int
    signal: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but PyTorch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to the minimum over `schedule_steps`."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, config.schedule_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def make_optimizer(model: CharLSTM, config: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases are left alone."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    keep = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.beta1, config.beta2))


# ---------------------------------------------------------------------------- run directory


def check_fresh_run_dir(run_dir: Path) -> None:
    if (run_dir / RUN_FILE).exists():
        raise UsageError(
            f"{run_dir} already holds a training run; pass --resume {run_dir} to continue it "
            "or choose another --out"
        )
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"{run_dir} exists and is not an empty directory; choose another --out")


def read_run_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} holds no training run to resume (no {RUN_FILE})")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} is corrupt: {err}") from None


def write_run_file(run_dir: Path, corpus: dict[str, Any], model_config: ModelConfig,
                   train_config: TrainConfig) -> None:
    record = {"corpus": corpus, "model_config": dataclasses.asdict(model_config),
              "train_config": dataclasses.asdict(train_config)}
    try:  # the run's first write: a read-only --out fails here, before any training
        atomic_write_text(run_dir / RUN_FILE,
                          json.dumps(record, indent=1, allow_nan=False) + "\n")
    except OSError as err:
        raise UsageError(f"cannot write the run directory {run_dir}: "
                         f"{err.strerror or err}") from None


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def read_metrics(run_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= up_to_step]


# ---------------------------------------------------------------------------- signals


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """Turn SIGINT/SIGTERM into a flag the loop polls, so it can checkpoint before exiting."""
    flag = {"signal": 0}
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        flag["signal"] = signum

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------- RNG state


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, str]:
    state = {"torch": encode_bytes(torch.get_rng_state()),
             "sampler": encode_bytes(generator.get_state())}
    if device.type == "cuda":
        state["cuda"] = encode_bytes(torch.cuda.get_rng_state(device))
    return state


def restore_rng(state: dict[str, str], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(decode_bytes(state["torch"]))
    generator.set_state(decode_bytes(state["sampler"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(decode_bytes(state["cuda"]), device)


def gather_rng(dist: DistContext, generator: torch.Generator,
               device: torch.device) -> list[dict[str, str]]:
    """Every rank's RNG state, so a resumed run with the same world size continues exactly."""
    mine = capture_rng(generator, device)
    if not dist.enabled:
        return [mine]
    blob = torch.frombuffer(bytearray(json.dumps(mine).ljust(32768).encode()), dtype=torch.uint8)
    parts = dist.gather_bytes(blob.to(device))
    return [json.loads(bytes(p.cpu().tolist()).decode()) for p in parts]


def weight_checksums(dist: DistContext, model: CharLSTM) -> list[float]:
    """One float64 checksum of the weights per rank: DDP replicas must stay identical."""
    total = torch.zeros(1, dtype=torch.float64)
    for parameter in model.parameters():
        weights = parameter.detach().double().cpu()
        total += weights.sum() + weights.square().sum()
    parts = dist.gather_bytes(total.view(torch.uint8).to(next(model.parameters()).device))
    return [float(p.cpu().view(torch.float64)[0]) for p in parts]


# ---------------------------------------------------------------------------- training


def train(request: RunRequest) -> TrainResult:
    """Run (or resume) one training run to completion, early stop, or signal."""
    device = resolve_device(request.device)
    if request.threads is not None:
        if request.threads < 1:
            raise UsageError(f"threads must be at least 1, got {request.threads}")
        torch.set_num_threads(request.threads)
    run_dir = request.out
    checkpoint = None
    if request.resume:
        run_info = read_run_file(run_dir)
        checkpoint = load_checkpoint(find_checkpoint(run_dir, "last"))
        data_path = request.data if request.data is not None else (
            Path(run_info["corpus"]["path"]) if run_info["corpus"].get("path") else None)
        text, corpus_name = read_corpus(data_path)
        if text_sha256(text) != run_info["corpus"]["sha256"]:
            raise UsageError(f"corpus {corpus_name} differs from the one {run_dir} was trained on")
        changed = {k for k, v in request.overrides.items() if v is not None} - set(RESUMABLE)
        if changed:
            raise UsageError(f"cannot change {', '.join(sorted(changed))} when resuming; "
                             f"only {', '.join(RESUMABLE)} may change")
        vocab = Vocabulary(checkpoint.vocab)
        model_config = checkpoint.model_config
        train_config = dataclasses.replace(
            checkpoint.train_config,
            **{k: v for k, v in request.overrides.items() if v is not None})
        train_config.validate()
        corpus = run_info["corpus"]
    else:
        check_fresh_run_dir(run_dir)
        text, corpus_name = read_corpus(request.data)
        vocab = Vocabulary.from_text(text)
        model_config, train_config = build_configs(request.preset, len(vocab), request.overrides)
        corpus = {"name": corpus_name, "sha256": text_sha256(text), "length": len(text),
                  "path": str(request.data.resolve()) if request.data else None,
                  "val_fraction": train_config.val_fraction}

    splits = Splits.from_tokens(vocab.encode(text), train_config.val_fraction,
                                train_config.seq_len)
    dist = init_distributed(device.type)
    try:
        result = _train_loop(request, run_dir, device, dist, vocab, splits, corpus,
                             model_config, train_config, checkpoint)
        dist.barrier()  # rank 0 may still be writing; leave together so Gloo tears down cleanly
        return result
    finally:
        shutdown_distributed(dist)


def _train_loop(request: RunRequest, run_dir: Path, device: torch.device, dist: DistContext,
                vocab: Vocabulary, splits: Splits, corpus: dict[str, Any],
                model_config: ModelConfig, train_config: TrainConfig,
                checkpoint: Any) -> TrainResult:
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    cfg = train_config
    torch.manual_seed(cfg.seed + dist.rank)
    generator = torch.Generator().manual_seed(cfg.seed + dist.rank)
    model = CharLSTM(model_config).to(device)
    optimizer = make_optimizer(model, cfg)
    step, best_val, evals_since_best, last_val = 0, math.inf, 0, math.inf
    metrics: list[dict[str, Any]] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint.weights)
        optimizer_from_tensors(optimizer, load_optimizer_tensors(checkpoint.path),
                               checkpoint.state["optimizer_groups"])
        step = checkpoint.step
        best_val = checkpoint.state["best_val_loss"]
        last_val = checkpoint.state["val_loss"]
        evals_since_best = checkpoint.state["evals_since_best"]
        saved_rng = checkpoint.state["rng"]
        if len(saved_rng) == dist.world_size:
            restore_rng(saved_rng[dist.rank], generator, device)
        else:  # a different process count: reseed per rank, reproducibly, from the step
            torch.manual_seed(cfg.seed + 1000 * step + dist.rank)
            generator.manual_seed(cfg.seed + 1000 * step + dist.rank)
        metrics = read_metrics(run_dir, step) if dist.is_main else []
    elif dist.is_main:
        write_run_file(run_dir, corpus, model_config, cfg)

    trained = model
    if dist.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    val_streams = split_streams(splits.val, cfg.val_streams)
    train_data = splits.train.to(device) if device.type == "cuda" else splits.train
    chars_per_step = cfg.batch_size * cfg.seq_len * dist.world_size
    parameters = count_parameters(model)

    def evaluate() -> float:
        nll, count = stream_nll(model, val_streams[dist.rank :: dist.world_size], device)
        totals = dist.sum_(torch.tensor([nll, float(count)], dtype=torch.float64, device=device))
        return float(totals[0] / totals[1])

    def checkpoint_now(pointers: tuple[str, ...]) -> None:
        rng = gather_rng(dist, generator, device)
        sums = weight_checksums(dist, model)
        if not dist.is_main:
            return
        if len(set(sums)) != 1:
            raise RuntimeError(f"DDP ranks hold different weights at step {step}: {sums}")
        state = {"step": step, "vocab": list(vocab.chars), "rank_weight_checksums": sums,
                 "train_config": dataclasses.asdict(cfg), "corpus": corpus,
                 "val_loss": last_val, "best_val_loss": best_val,
                 "evals_since_best": evals_since_best, "rng": rng,
                 "world_size": dist.world_size, "parameters": parameters}
        save_checkpoint(run_dir, model, optimizer, state, pointers=pointers)
        write_metrics(run_dir, metrics)
        save_loss_curve(metrics, run_dir / "loss_curve.png")

    progress = TrainProgress(enabled=request.show_progress and dist.is_main,
                             total=cfg.max_steps, start=step)
    progress.note(
        f"bard train: {parameters:,} parameters on {device.type}"
        f"{' (bf16 autocast)' if use_bf16 else ''}, {dist.world_size} process(es), "
        f"effective batch {cfg.batch_size * dist.world_size} x {cfg.seq_len} chars, "
        f"lr {cfg.learning_rate:g} (not scaled with the process count), "
        f"{chars_per_step / dist.world_size:,.0f} chars/step per rank")
    stopped, stop_signal = "finished", 0
    trained.train()
    window_loss = torch.zeros((), device=device)
    window_start, window_steps = time.perf_counter(), 0
    with progress, stop_on_signals() as flag:
        while step < cfg.max_steps:
            lr = learning_rate_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = sample_batch(train_data, cfg.batch_size, cfg.seq_len, generator)
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits, _ = trained(inputs)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            status = torch.stack([(~torch.isfinite(loss)).float(),
                                  (~torch.isfinite(grad_norm)).float(),
                                  torch.tensor(float(flag["signal"]), device=device)])
            bad_loss, bad_grad, signum = dist.max_(status).tolist()
            if bad_loss or bad_grad:
                raise TrainingDiverged(step + 1, "loss" if bad_loss else "gradient norm")
            optimizer.step()
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
            if signum:
                stopped, stop_signal = "signal", int(signum)
                progress.note(f"signal {int(signum)} at step {step}: saving a checkpoint")
                checkpoint_now(("last",))
                break
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                last_val = evaluate()
                improved = last_val < best_val
                if improved:
                    best_val, evals_since_best = last_val, 0
                else:
                    evals_since_best += 1
                metrics.append({"step": step, "split": "val", "loss": last_val,
                                "bpc": bits_per_char(last_val)})
                progress.note(f"step {step}: val loss {last_val:.4f} nats/char "
                              f"({bits_per_char(last_val):.4f} bpc)"
                              f"{' *best*' if improved else ''}")
                checkpoint_now(("last", "best") if improved else ("last",))
                window_start = time.perf_counter()
                if cfg.patience is not None and evals_since_best >= cfg.patience:
                    stopped = "early-stop"
                    progress.note(f"early stop: no improvement in {cfg.patience} evaluations")
                    break
    return TrainResult(run_dir, step, best_val, last_val, stopped, parameters, stop_signal)
