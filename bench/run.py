"""`bard bench`: generation and training speed, side by side, in one run.

Every engine runs on the same weights and the same prompts; each measurement is warmed up,
repeated, and reported as median and spread; ratios are taken within the run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import bard_sdk
import numpy as np
import torch
from bard_sdk.cuda import onnxruntime_packages
from bard_sdk.runtime import HostRunner

from .engines import (
    Engine,
    bare_ort_engine,
    sdk_engine,
    torch_engine,
    torch_model_from_onnx,
    tutorial_engine,
)
from .results import CUDA_BATCHES, BenchConfig, Measurement, Report


def machine_info(threads: int | None, device: str = "cpu") -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads or os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "bard": metadata.version("bard"), "platform": platform.platform()}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), torch_cuda=torch.version.cuda,
                    onnxruntime_packages=", ".join(onnxruntime_packages()))
    return info


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, in ABBA rounds (A B, then B A, ...) after one
    warm-up each, so a machine whose speed drifts from minute to minute slows every engine
    alike and the medians' ratios hold."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for round_ in range(repeats):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def speed(engine: str, batch: int, work: float, times: list[float]) -> Measurement:
    rates = [work / t for t in times]
    return Measurement(engine, "chars_per_s", batch, statistics.median(rates), min(rates),
                       max(rates), "chars/s")


def bench_generation(report: Report, engines: dict[str, Engine], vocab: int,
                     config: BenchConfig, slow: set[str]) -> None:
    """Every engine at each batch size, interleaved round by round (see `interleaved`)."""
    rng = np.random.default_rng(0)
    for batch in config.batches:
        prompts = rng.integers(0, vocab, (batch, 8), dtype=np.int64)
        # The re-feed baseline is slow; its rate is per character, so it makes fewer.
        new = {name: max(5, config.new_chars // 10) if name in slow and batch >= 64
               else config.new_chars for name in engines}
        calls = {name: (lambda e=engine, n=new[name], p=prompts: e(p, n))
                 for name, engine in engines.items()}
        for name, times in interleaved(calls, config.repeats).items():
            report.measurements.append(speed(name, batch, batch * new[name], times))
            print(f"  {name:>14} batch {batch:>3}: "
                  f"{report.measurements[-1].median:>12,.0f} chars/s", file=sys.stderr)


def bench_prefill(report: Report, engines: dict[str, Engine], vocab: int,
                  config: BenchConfig, names: tuple[str, ...]) -> None:
    prompt = np.random.default_rng(1).integers(0, vocab, (1, config.prefill_chars),
                                               dtype=np.int64)
    calls = {name: (lambda e=engines[name]: e(prompt, 1)) for name in names}
    for name, times in interleaved(calls, config.repeats).items():
        report.measurements.append(Measurement(name, "first_char_ms", 1,
                                               statistics.median(times) * 1e3,
                                               min(times) * 1e3, max(times) * 1e3, "ms"))


MEMORY_SCRIPT = """
import sys, numpy as np
kind, path, batch, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prompts = np.random.default_rng(0).integers(0, 60, (batch, 8))
if kind == "sdk":
    import bard_sdk
    model = bard_sdk.load(path, device="cpu")
    model.generate([model.vocab.decode(p) for p in prompts], new, temperature=0.8, seed=1)
else:
    import onnxruntime as ort
    s = ort.InferenceSession(path + "/model.onnx", providers=["CPUExecutionProvider"])
    layers, _, hidden = s.get_inputs()[1].shape
    h = c = np.zeros((layers, batch, hidden), np.float32)
    logits, h, c = s.run(None, {"tokens": prompts, "h0": h, "c0": c})
    for _ in range(new):
        ids = logits[:, -1].argmax(1)[:, None]
        logits, h, c = s.run(None, {"tokens": ids, "h0": h, "c0": c})
from bard.bench.procfs import peak_rss_kib
print(peak_rss_kib() / 1024)
"""


def peak_memory_mb(kind: str, artifact: Path, batch: int, new: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, kind, str(artifact), str(batch),
                          str(new)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def import_overhead_s(repeats: int) -> float:
    """Extra seconds `import bard_sdk` adds after `import onnxruntime` (median, subprocess)."""
    code = ("import time; import onnxruntime; t = time.perf_counter(); import bard_sdk; "
            "print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(max(3, repeats))]
    return statistics.median(runs)


def training_fields(manifest: bard_sdk.Manifest,
                    quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The benchmarked model's sizes with its preset's batch shape and precision."""
    from bard.training.config import PRESETS

    preset = PRESETS["tiny" if quick else "shakespeare"]
    sizes = manifest.sizes
    model_fields = dict(embedding_dim=sizes.embedding_dim, hidden_size=sizes.hidden_size,
                        num_layers=sizes.num_layers, dropout=preset.model.get("dropout", 0.0))
    train_fields = {k: preset.train[k] for k in ("batch_size", "seq_len", "precision")
                    if k in preset.train}
    return model_fields, train_fields


def cpu_runs_bf16_lstm() -> bool:
    """oneDNN's bf16 LSTM needs bf16 instructions (AVX512-BF16 or AMX); older CPUs refuse it."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 8))
    except RuntimeError:
        return False
    return True


def bench_bard_train(report: Report, manifest: bard_sdk.Manifest, config: BenchConfig,
                     quick: bool, device: str, label: str, precision: str | None = None) -> None:
    """chars/s of `bard train` itself on `device`, from its own metrics."""
    from bard.training.train import RunRequest, train

    model_fields, train_fields = training_fields(manifest, quick)
    if precision is not None:
        train_fields["precision"] = precision
    steps = config.train_steps
    with tempfile.TemporaryDirectory() as tmp:
        train(RunRequest(out=Path(tmp) / "run", preset="tiny", show_progress=False,
                         device=device, threads=config.threads,
                         overrides={**model_fields, **train_fields, "max_steps": steps,
                                    "eval_interval": steps, "warmup_steps": 1,
                                    "val_streams": 1, "val_fraction": 0.01}))
        records = [json.loads(line) for line in
                   (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["chars_per_s"] for r in records if r["split"] == "train"]
    window_rates = rates[2:] or rates  # the first 20 steps warm up allocator and caches
    report.measurements.append(Measurement(label, "train_chars_per_s", 0,
                                           statistics.median(window_rates), min(window_rates),
                                           max(window_rates), "chars/s"))


def bench_training(report: Report, manifest: bard_sdk.Manifest, config: BenchConfig,
                   quick: bool) -> None:
    """`bard train`'s own loop against a bare forward/backward/step on the same model and batch."""
    from bard.training.config import ModelConfig, TrainConfig
    from bard.training.model import CharLSTM
    from bard.training.train import make_optimizer

    bench_bard_train(report, manifest, config, quick, "cpu", "bard train")
    vocab_size = manifest.sizes.vocab_size
    model_fields, train_fields = training_fields(manifest, quick)
    steps = config.train_steps
    tc = TrainConfig(**train_fields)
    model = CharLSTM(ModelConfig(vocab_size=vocab_size, **model_fields))
    optimizer = make_optimizer(model, tc)
    tokens = torch.randint(0, vocab_size, (tc.batch_size, tc.seq_len + 1))
    use_bf16 = tc.precision == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                 tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    times = timed(step, max(3, steps // 3))
    report.measurements.append(speed("bare loop", 0, tc.batch_size * tc.seq_len, times))
    report.measurements[-1].metric = "train_chars_per_s"


def run_bench(artifact: Path | None, quick: bool, out_dir: Path,
              threads: int | None = None, device: str = "cpu") -> Report:
    if device not in ("cpu", "cuda"):
        raise bard_sdk.InvalidArgumentError(f"--device must be cpu or cuda, got {device!r}")
    config = BenchConfig.quick() if quick else BenchConfig()
    config = BenchConfig(**{**asdict(config), "threads": threads})
    if threads:
        torch.set_num_threads(threads)
    path = artifact or bard_sdk.bundled_model_path()
    if device == "cuda":
        if not quick:
            config = BenchConfig(**{**asdict(config), "batches": CUDA_BATCHES})
        report = run_cuda_bench(path, config, quick)
        write_outputs(report, out_dir)
        return report
    sdk = bard_sdk.load(path, device="cpu", threads=threads)
    report = Report(machine_info(threads), asdict(config), str(path))
    torch_model = torch_model_from_onnx(path / sdk.manifest.file("fp32").path, sdk.manifest)
    engines: dict[str, Engine] = {"sdk": sdk_engine(sdk)}
    if "int8" in sdk.manifest.variants():
        engines["sdk int8"] = sdk_engine(bard_sdk.load(path, variant="int8", threads=threads))
    engines["onnxruntime"] = bare_ort_engine(path / sdk.manifest.file("fp32").path, threads)
    engines["torch"] = torch_engine(torch_model)
    engines["tutorial"] = tutorial_engine(torch_model)
    print("generation (greedy, chars/s):", file=sys.stderr)
    bench_generation(report, engines, len(sdk.vocab), config, slow={"tutorial", "torch"})
    bench_prefill(report, engines, len(sdk.vocab), config, ("sdk", "onnxruntime", "torch"))
    biggest = max(config.batches)
    report.extras["peak_rss_mb_sdk"] = peak_memory_mb("sdk", path, biggest, config.new_chars)
    report.extras["peak_rss_mb_onnxruntime"] = peak_memory_mb("ort", path, biggest,
                                                              config.new_chars)
    report.extras["import_bard_sdk_after_onnxruntime_s"] = import_overhead_s(config.repeats)
    bench_training(report, sdk.manifest, config, quick)
    compute_ratios(report, config)
    write_outputs(report, out_dir)
    return report


def run_cuda_bench(path: Path, config: BenchConfig, quick: bool) -> Report:
    """The GPU numbers: the SDK on the CUDA execution provider with the state on the device,
    against the CPU provider and against CUDA with the state through the host every step;
    what one state round trip costs; `bard train` on CUDA (bf16) against the CPU."""
    cuda = bard_sdk.load(path, device="cuda", threads=config.threads)  # the reason, if not
    if not torch.cuda.is_available():
        raise bard_sdk.DeviceError(f"--device cuda but torch {torch.__version__} sees no CUDA "
                                   "device (a CPU build of torch, or no driver)")
    via_host = cuda.with_runner(lambda bound: HostRunner(bound.session))
    cpu = bard_sdk.load(path, device="cpu", threads=config.threads)
    torch_model = torch_model_from_onnx(path / cuda.manifest.file("fp32").path, cuda.manifest)
    report = Report(machine_info(config.threads, "cuda"), asdict(config), str(path))
    engines: dict[str, Engine] = {
        "sdk cuda": sdk_engine(cuda), "sdk cuda, state via host": sdk_engine(via_host),
        "sdk cpu": sdk_engine(cpu), "torch cuda": torch_engine(torch_model.to("cuda"))}
    print("generation on CUDA (greedy, chars/s):", file=sys.stderr)
    bench_generation(report, engines, len(cuda.vocab), config, slow=set())
    bench_prefill(report, engines, len(cuda.vocab), config, ("sdk cuda", "sdk cpu",
                                                              "torch cuda"))
    bench_state_round_trip(report, cuda, config)
    bench_bard_train(report, cuda.manifest, config, quick, "cuda", "bard train cuda")
    precision = training_fields(cuda.manifest, quick)[1].get("precision", "auto")
    if precision == "bf16" and not cpu_runs_bf16_lstm():
        precision = "fp32"
    report.machine["cpu_train_precision"] = precision
    bench_bard_train(report, cuda.manifest, config, quick, "cpu", "bard train", precision)
    for batch in config.batches:
        sdk = report.get("sdk cuda", "chars_per_s", batch)
        for other in ("sdk cpu", "sdk cuda, state via host", "torch cuda"):
            report.ratios[f"sdk cuda/{other}@{batch}"] = sdk / report.get(other, "chars_per_s",
                                                                          batch)
    report.ratios["bard train cuda/cpu"] = (
        report.get("bard train cuda", "train_chars_per_s", 0)
        / report.get("bard train", "train_chars_per_s", 0))
    return report


def bench_state_round_trip(report: Report, model: bard_sdk.Model,
                           config: BenchConfig) -> None:
    """Device -> host -> device for the whole state (what finishing rows costs, and what
    every step would cost without IOBinding)."""
    for batch in config.batches:
        state = model.runner.state(*model.zero_state(batch))  # bard's own bench
        rows = np.arange(batch)
        times = timed(lambda s=state, r=rows: s.select(r), config.repeats)
        report.measurements.append(Measurement("sdk cuda", "state_round_trip_us", batch,
                                               statistics.median(times) * 1e6,
                                               min(times) * 1e6, max(times) * 1e6, "µs"))


def compute_ratios(report: Report, config: BenchConfig) -> None:
    for batch in config.batches:
        sdk = report.get("sdk", "chars_per_s", batch)
        report.ratios[f"sdk/torch@{batch}"] = sdk / report.get("torch", "chars_per_s", batch)
        report.ratios[f"sdk/onnxruntime@{batch}"] = sdk / report.get("onnxruntime",
                                                                     "chars_per_s", batch)
        report.ratios[f"sdk/tutorial@{batch}"] = sdk / report.get("tutorial", "chars_per_s",
                                                                  batch)
        int8 = report.get("sdk int8", "chars_per_s", batch)
        if not np.isnan(int8):
            report.ratios[f"int8/sdk@{batch}"] = int8 / sdk
    report.ratios["peak_rss sdk/onnxruntime"] = (report.extras["peak_rss_mb_sdk"]
                                                 / report.extras["peak_rss_mb_onnxruntime"])
    report.ratios["bard train/bare loop"] = (report.get("bard train", "train_chars_per_s", 0)
                                             / report.get("bare loop", "train_chars_per_s", 0))


def strict(value: Any) -> Any:
    """A missing measurement (NaN) is null in the JSON, never a bare NaN."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return value


def write_outputs(report: Report, out_dir: Path) -> None:
    from bard.training.fsutil import atomic_write_text

    from .report import plot, table

    out_dir.mkdir(parents=True, exist_ok=True)
    payload = strict(asdict(report))
    atomic_write_text(out_dir / "bench.json", json.dumps(payload, indent=1, allow_nan=False)
                      + "\n")
    plot(report, out_dir / "bench.png")
    print(table(report))
