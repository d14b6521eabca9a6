"""`bard bench`: same weights in every engine, and a --quick smoke run (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
import torch
from bard.bench.engines import (
    bare_ort_engine,
    sdk_engine,
    torch_engine,
    torch_model_from_onnx,
    tutorial_engine,
)

from tests.conftest import bard_cli


def test_torch_engine_runs_the_onnx_weights(tiny_artifact: Path) -> None:
    sdk = bard_sdk.load(tiny_artifact)
    model = torch_model_from_onnx(tiny_artifact / "model.onnx", sdk.manifest)
    tokens = np.random.default_rng(0).integers(0, 65, (3, 40))
    with torch.inference_mode():
        expected, _ = model(torch.from_numpy(tokens))
    logits, _, _ = sdk.forward(tokens, *sdk.zero_state(3))
    assert np.abs(expected.numpy() - logits).max() < 1e-4


def test_engines_agree_on_greedy_text(tiny_artifact: Path) -> None:
    sdk = bard_sdk.load(tiny_artifact)
    model = torch_model_from_onnx(tiny_artifact / "model.onnx", sdk.manifest)
    prompts = np.random.default_rng(1).integers(0, 65, (2, 8))
    reference = bare_ort_engine(tiny_artifact / "model.onnx", None)(prompts, 30)
    assert np.array_equal(sdk_engine(sdk)(prompts, 30), reference)
    assert np.array_equal(torch_engine(model)(prompts, 30), reference)
    assert tutorial_engine(model)(prompts, 30).shape == (2, 30)


def test_quick_bench_smoke(tiny_artifact: Path, tmp_path: Path) -> None:
    result = bard_cli("bench", "--quick", "--model", str(tiny_artifact), "--out",
                      str(tmp_path), check=True, timeout=300)
    report = json.loads((tmp_path / "bench.json").read_text())
    engines = {m["engine"] for m in report["measurements"]}
    assert engines == {"sdk", "sdk int8", "onnxruntime", "torch", "tutorial", "bard train",
                       "bare loop"}
    assert all(m["median"] > 0 for m in report["measurements"])
    assert "sdk/torch@1" in report["ratios"] and report["machine"]["cores"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| sdk |" in result.stdout


def test_serving_bench_smoke(tiny_artifact: Path, tmp_path: Path) -> None:
    result = bard_cli("bench", "--serving", "--quick", "--model", str(tiny_artifact), "--out",
                      str(tmp_path), check=True, timeout=300)
    report = json.loads((tmp_path / "serving.json").read_text())
    modes = {(r["mode"], r["callers"]) for r in report["results"]}
    assert modes == {(mode, callers) for callers in (1, 4) for mode in (
        "batched generate", "threads x Model.stream", "threads x Engine.stream",
        "HTTP x bard serve")}
    assert all(r["chars_per_s"] > 0 for r in report["results"])
    timed = [r for r in report["results"] if r["mode"] != "batched generate"]
    assert all(0 < r["ttfc_p50_ms"] <= r["ttfc_p99_ms"] for r in timed)
    assert "threads x Engine.stream / batched @4" in report["ratios"]
    assert all(r["cpu_ms_per_kchar"] > 0 for r in report["results"])
    http = [r for r in report["results"] if r["mode"] == "HTTP x bard serve"]
    # /proc counts in clock ticks: a quick run may use less than one of the server's
    assert all(0 <= r["server_cpu_ms_per_kchar"] < r["cpu_ms_per_kchar"] for r in http)
    assert "HTTP server capacity (CPU per char) / batched @4" in report["ratios"] or not any(
        r["server_cpu_ms_per_kchar"] for r in http)
    assert "| HTTP x bard serve | 4 |" in result.stdout


def test_bench_device_is_cpu_or_cuda(tmp_path: Path) -> None:
    from bard.bench.run import run_bench

    with pytest.raises(ValueError, match="--device must be cpu or cuda, got 'tpu'"):
        run_bench(None, True, tmp_path, device="tpu")
    assert not any(tmp_path.iterdir())


def test_corpus_scale_section_smoke(tmp_path: Path) -> None:
    """The section's mechanics on a 2 MB corpus (the real run is 100 MB and 1 GB)."""
    from bard.bench.corpus_scale import run_corpus_scale, stdlib_sources

    assert stdlib_sources(ascii_only=True).isascii()
    [result] = run_corpus_scale([2.0], tmp_path, steps=2, variants=("python",),
                                baseline_mb=0.5)
    assert result.corpus_bytes <= 2_000_000 and result.chars > 1_900_000
    assert result.dtype == ("uint8" if result.distinct_chars <= 256 else "uint16")
    assert result.encode_mb_per_s > 0 and result.train_peak_rss_mb > 0
    assert "bard train --preset tiny --max-steps 2 --data <python 2 MB>" in result.command
    saved = json.loads((tmp_path / "corpus_scale.json").read_text())
    assert saved[0]["chars"] == result.chars
    [ascii_only] = run_corpus_scale([2.0], tmp_path / "encode", variants=("python-ascii",),
                                    train=False, repeats=1)
    assert ascii_only.dtype == "uint8" and ascii_only.train_peak_rss_mb is None


def test_hot_path_bench_compares_two_sdks_and_prices_beams(tiny_artifact: Path,
                                                           tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "hot_path.json"
    this_sdk = Path(bard_sdk.__file__).parent  # "before" = the same SDK: ratios near 1
    result = subprocess.run(
        [sys.executable, "-m", "bard.bench.hot_path", "--before", str(this_sdk), "--model",
         str(tiny_artifact), "--rounds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    cases = report["hot_path_chars_per_s"]
    assert set(cases) == {"greedy, batch 1", "sampled, batch 1", "sampled, batch 8",
                          "sampled, batch 64"}
    assert all(row["before"] > 0 and row["after"] > 0 for row in cases.values())
    assert set(report["beam_chars_per_s"]) == {f"beams {k}, batch 1" for k in (1, 2, 4, 8)}
    assert "| greedy, batch 1 |" in result.stdout and "| beams 8, batch 1 |" in result.stdout


def test_sampler_steps_bench_times_both_sdks_on_every_case(tiny_artifact: Path) -> None:
    import subprocess
    import sys

    this_sdk = Path(bard_sdk.__file__).parent  # "before" = the same SDK
    result = subprocess.run(
        [sys.executable, "-m", "bard.bench.sampler_steps", "--model", str(tiny_artifact),
         "--before", str(this_sdk), "--rows", "4", "--steps", "6"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["microseconds_per_step"]
    assert set(report) == {"temperature 0.8", "top_k 50", "top_p 0.9",
                           "temperature 1.0, top_p 0.95"}
    assert all(row["before"] > 0 and row["after"] > 0 for row in report.values())
    assert "| top_p 0.9 |" in result.stdout
