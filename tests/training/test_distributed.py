"""DDP under torchrun with Gloo on the CPU: two processes, identical replicas, sharded eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bard.bench.procfs import descendants
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from bard.training.data import Splits, eval_spans
from bard.training.evaluate import stream_nll

from tests.conftest import bard_cli

ARGS = ["--preset", "tiny", "--hidden-size", "32", "--embedding-dim", "16", "--seq-len", "32",
        "--batch-size", "8", "--max-steps", "30", "--eval-interval", "15", "--val-streams", "6",
        "--eval-chars", "20000", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "bard", "train", *ARGS, "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_ranks_end_with_identical_weights(ddp_run: Path) -> None:
    state = json.loads((find_checkpoint(ddp_run, "last") / "state.json").read_text())
    sums = state["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["rng"][0]["sampler"] != state["rng"][1]["sampler"], "ranks draw different windows"


def test_loss_falls_and_throughput_is_logged_per_rank(ddp_run: Path) -> None:
    records = [json.loads(x) for x in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    val = [r["loss"] for r in records if r["split"] == "val"]
    assert len(val) == 2 and val[1] < val[0]
    train = [r for r in records if r["split"] == "train"]
    assert all(r["chars_per_s_per_rank"] == pytest.approx(r["chars_per_s"] / 2) for r in train)


def test_sharded_validation_equals_single_process(ddp_run: Path) -> None:
    """Both the bounded evaluation subset and the final whole-split score."""
    checkpoint = load_checkpoint(find_checkpoint(ddp_run, "last"))
    model = model_from_checkpoint(checkpoint)
    tokens = np.memmap(ddp_run / "corpus.uint8.bin", dtype=np.uint8, mode="r")
    val = Splits.from_tokens(tokens, 0.1, 32).val
    cpu = torch.device("cpu")
    nll, count = stream_nll(model, val, eval_spans(len(val), 6, 20_000), cpu)
    assert count < 20_000 and checkpoint.state["val_loss"] == pytest.approx(nll / count,
                                                                           rel=1e-12)
    nll, count = stream_nll(model, val, eval_spans(len(val), 6), cpu)
    assert count == len(val) - 6
    assert checkpoint.state["val_loss_whole_split"] == pytest.approx(nll / count, rel=1e-12)


def test_ddp_checkpoint_resumes_in_one_process(ddp_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ddp_run, run)
    result = bard_cli("train", "--resume", str(run), "--max-steps", "40", "--extend",
                      "--quiet", check=True)
    assert "at step 40" in result.stdout
    assert load_checkpoint(find_checkpoint(run, "last")).state["world_size"] == 1


def test_a_dead_rank_ends_the_job_instead_of_hanging(tmp_path: Path) -> None:
    """Kill rank 1 mid-run: torchrun must stop the job, report that rank, and exit non-zero."""
    import signal
    import time

    out = tmp_path / "run"
    args = [a for a in ARGS if a not in ("30", "--max-steps")]
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "bard", "train", *args, "--max-steps", "100000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "BARD_DIST_TIMEOUT_S": "60"})
    deadline = time.time() + 120
    rank1 = None
    while rank1 is None and time.time() < deadline and job.poll() is None:
        time.sleep(0.5)
        if (out / "run.json").exists():
            rank1 = find_rank(job.pid, 1)
    assert rank1 is not None, "rank 1 never started"
    time.sleep(1.0)
    os.kill(rank1, signal.SIGKILL)
    _, err = job.communicate(timeout=180)
    assert job.returncode != 0
    assert "rank      : 1" in err or "rank: 1" in err, err[-2000:]


def find_rank(job: int, rank: int) -> int | None:
    """The pid of the worker with RANK=rank among the torchrun job's own descendants (the
    nearest one: a worker's own children inherit its environment)."""
    for pid in descendants(job):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None
