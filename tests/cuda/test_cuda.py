"""The GPU paths end to end (`make gpu-check` on an NVIDIA machine): bf16 training on CUDA
resumes exactly; its export runs on onnxruntime's CUDA provider with the state kept on the
device (IOBinding) and agrees with the CPU provider; `bard bench --device cuda` runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
import torch
from bard.export.export import ExportRequest, export_run
from bard.training.checkpoint import find_checkpoint
from bard.training.train import RunRequest, TrainResult, train
from bard_sdk.runtime import BoundRunner, DeviceState
from safetensors.torch import load_file

from tests.conftest import bard_cli, wrapped

pytestmark = pytest.mark.cuda

# The tiny preset, shortened; bf16 autocast (what `precision=auto` picks on CUDA) made explicit.
RUN = dict(max_steps=20, eval_interval=10, val_streams=4, val_fraction=0.02, precision="bf16")
PROMPTS = ["ROMEO:", "JULIET:\nO", "", "KING HENRY VI:\nWhat"]


def runner_of(model: bard_sdk.Model):  # type: ignore[no-untyped-def]
    """The model's runner, through the documented seam (`Model.with_runner`)."""
    return wrapped(model, lambda inner: inner)[1]


@pytest.fixture(scope="module")
def deterministic() -> Iterator[None]:
    """cuDNN and PyTorch kernels that give the same bits every time (a warning, not an error,
    for any op without one: then the resume comparison itself fails and says so)."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def cuda_train(out: Path, **overrides: object) -> TrainResult:
    return train(RunRequest(out=out, preset="tiny", overrides={**RUN, **overrides},
                            device="cuda", show_progress=False))


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory: pytest.TempPathFactory, deterministic: None) -> Path:
    out = tmp_path_factory.mktemp("cuda") / "straight"
    cuda_train(out)
    return out


@pytest.fixture(scope="module")
def cuda_artifact(cuda_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cuda-artifact") / "tiny"
    export_run(ExportRequest(run_dir=cuda_run, out=out))
    return out


@pytest.fixture(scope="module")
def on_cuda(cuda_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(cuda_artifact, device="cuda")


@pytest.fixture(scope="module")
def on_cpu(cuda_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(cuda_artifact, device="cpu")


def test_bf16_training_on_cuda_resumes_exactly(cuda_run: Path, tmp_path: Path,
                                               deterministic: None) -> None:
    split = tmp_path / "split"
    cuda_train(split, max_steps=10, decay_steps=20)
    resumed = train(RunRequest(out=split, resume=True, overrides={"max_steps": 20},
                               device="cuda", show_progress=False))
    straight = json.loads((find_checkpoint(cuda_run, "last") / "state.json").read_text())
    assert straight["step"] == resumed.step == 20
    assert straight["train_config"]["precision"] == "bf16"
    assert "cuda" in straight["rng"][0], "the run's RNG state says it trained on CUDA"
    a = load_file(str(find_checkpoint(cuda_run, "last") / "model.safetensors"))
    b = load_file(str(find_checkpoint(split, "last") / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["val_loss"] == resumed.last_val_loss


def test_export_runs_on_the_cuda_provider_with_state_on_the_device(
        on_cuda: bard_sdk.Model) -> None:
    assert on_cuda.device == "cuda"
    assert runner_of(on_cuda).session.get_providers()[0] == "CUDAExecutionProvider"
    assert isinstance(runner_of(on_cuda), BoundRunner)


def test_cuda_logits_match_the_cpu_provider(on_cuda: bard_sdk.Model,
                                            on_cpu: bard_sdk.Model) -> None:
    """A 300-character prefill of 4 rows, then 50 single steps fed the same ids."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, len(on_cpu.vocab), (4, 300))
    gpu_state = runner_of(on_cuda).state(*on_cuda.zero_state(4))
    cpu_state = runner_of(on_cpu).state(*on_cpu.zero_state(4))
    worst = 0.0
    for step in range(51):
        feed = tokens if step == 0 else rng.integers(0, len(on_cpu.vocab), (4, 1))
        gpu_logits, gpu_state = runner_of(on_cuda).step(feed, gpu_state)
        cpu_logits, cpu_state = runner_of(on_cpu).step(feed, cpu_state)
        worst = max(worst, float(np.abs(gpu_logits - cpu_logits).max()))
    assert worst < 1e-3, worst
    for gpu, cpu in zip(gpu_state.to_numpy(), cpu_state.to_numpy()):
        assert np.abs(gpu - cpu).max() < 1e-3


def test_greedy_text_on_cuda_equals_the_cpu_provider(on_cuda: bard_sdk.Model,
                                                     on_cpu: bard_sdk.Model) -> None:
    cuda_text = on_cuda.generate("ROMEO:", 200, temperature=0)
    assert len(cuda_text) == 200
    assert cuda_text == on_cpu.generate("ROMEO:", 200, temperature=0)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_batched_rows_on_cuda_equal_single_rows(on_cuda: bard_sdk.Model,
                                                temperature: float) -> None:
    seeds = [11, 12, 13, 14]
    batched = on_cuda.generate(PROMPTS, 100, temperature=temperature, seed=seeds)
    alone = [on_cuda.generate(p, 100, temperature=temperature, seed=s)
             for p, s in zip(PROMPTS, seeds)]
    assert batched == alone


def test_state_stays_on_the_device_between_steps(on_cuda: bard_sdk.Model,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = runner_of(on_cuda).state(*on_cuda.zero_state(3))
    ids = np.zeros((3, 1), dtype=np.int64)
    for _ in range(5):
        logits, state = runner_of(on_cuda).step(ids, state)
        assert isinstance(logits, np.ndarray)
        assert state.h.device_name() == state.c.device_name() == "cuda"
        ids = logits[:, -1].argmax(axis=1)[:, None]
    trips: list[int] = []
    real = DeviceState.to_numpy

    def counted(self: DeviceState) -> tuple[np.ndarray, np.ndarray]:
        trips.append(1)
        return real(self)

    monkeypatch.setattr(DeviceState, "to_numpy", counted)
    assert len(on_cuda.generate(PROMPTS, 100, temperature=0.8, seed=1)[0]) == 100
    assert trips == [], "no state round trip through the host while rows decode"


def test_bench_quick_on_cuda(cuda_artifact: Path, tmp_path: Path) -> None:
    bard_cli("bench", "--quick", "--device", "cuda", "--model", str(cuda_artifact), "--out",
             str(tmp_path), check=True, timeout=600)
    report = json.loads((tmp_path / "bench.json").read_text())
    engines = {m["engine"] for m in report["measurements"]}
    assert engines == {"sdk cuda", "sdk cuda, state via host", "sdk cpu", "torch cuda",
                       "bard train cuda", "bard train"}
    metrics = {m["metric"] for m in report["measurements"]}
    assert metrics == {"chars_per_s", "first_char_ms", "state_round_trip_us",
                       "train_chars_per_s"}
    assert all(m["median"] > 0 for m in report["measurements"])
    assert "bard train cuda/cpu" in report["ratios"] and report["machine"]["gpu"]
