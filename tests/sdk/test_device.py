"""Device choice on a machine without a usable GPU: 'auto' falls back with at most one warning
line, 'cuda' refuses naming the missing piece and the fix, and onnxruntime stays quiet.

The missing pieces are simulated at the dynamic loader (`loader_error`) and the provider
list; where onnxruntime-gpu is installed (the base install on Linux x86_64), its real failed
CUDA start is used too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import bard_sdk
import onnxruntime as ort
import pytest
from bard_sdk import cuda, runtime

from tests.conftest import bard_cli

CUDA_AND_CPU = [cuda.CUDA, runtime.CPU]


@pytest.fixture(autouse=True)
def fresh_checks() -> Iterator[None]:
    """The CUDA check and the warnings are once per process: start and leave each test clean."""
    def clear() -> None:
        cuda.check_cuda.cache_clear()
        cuda.preload_cuda_libraries.cache_clear()
        runtime._warned.clear()

    clear()
    yield
    clear()


def bard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bard_sdk" and r.levelno >= logging.WARNING]


linux_only = pytest.mark.skipif(sys.platform != "linux",
                                reason="the library checks are Linux's (sonames)")


def pretend(monkeypatch: pytest.MonkeyPatch, missing: dict[str, str]) -> None:
    """An onnxruntime-gpu built for CUDA 13 whose loader lacks the `missing` libraries."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: CUDA_AND_CPU)
    monkeypatch.setattr(cuda, "built_for_cuda", lambda: 13)
    monkeypatch.setattr(cuda, "loader_error", lambda lib: missing.get(lib))
    monkeypatch.setattr(ort, "preload_dlls", lambda: print("Failed to load libcublasLt.so.13"),
                        raising=False)


def no_cuda_session(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the providers of every session; a CUDA one must never be attempted."""
    real = ort.InferenceSession
    asked: list[list[str]] = []

    def session(model: bytes, options: ort.SessionOptions, providers: list[str]
                ) -> ort.InferenceSession:
        asked.append(list(providers))
        return real(model, options, providers=[runtime.CPU])

    monkeypatch.setattr(ort, "InferenceSession", session)
    return asked


@linux_only
def test_missing_libraries_auto_warns_once_and_cuda_names_them(
        tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    pretend(monkeypatch, {"libcudnn.so.9": "libcudnn.so.9: cannot open shared object file",
                          "libcublasLt.so.13": "libcublasLt.so.13: cannot open shared object"})
    asked = no_cuda_session(monkeypatch)
    with caplog.at_level(logging.INFO, logger="bard_sdk"):
        first = bard_sdk.load(tiny_artifact)
        second = bard_sdk.load(tiny_artifact)
    assert first.device == second.device == "cpu"
    assert asked == [[runtime.CPU], [runtime.CPU]], "no CUDA attempt when a library is missing"
    warned = bard_warnings(caplog)
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert "libcublasLt.so.13, libcudnn.so.9" in warned[0]
    assert "pip install 'bard[gpu]'" in warned[0]
    out, err = capfd.readouterr()
    assert "Failed to load" not in out + err, "preload_dlls' prints stay out of the terminal"
    with pytest.raises(bard_sdk.DeviceError, match=r"device='cuda' but CUDA 13 / cuDNN 9 "
                       r"libraries not found: libcublasLt.so.13, libcudnn.so.9; "
                       r"fix: pip install 'bard\[gpu\]'"):
        bard_sdk.load(tiny_artifact, device="cuda")


@linux_only
def test_no_driver_is_silent_on_auto_and_named_on_cuda(
        tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pretend(monkeypatch, {cuda.DRIVER: "libcuda.so.1: cannot open shared object file"})
    preloads: list[int] = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: preloads.append(1), raising=False)
    with caplog.at_level(logging.INFO, logger="bard_sdk"):
        assert bard_sdk.load(tiny_artifact).device == "cpu"
    assert bard_warnings(caplog) == [], "a machine without a GPU is no news"
    with pytest.raises(bard_sdk.DeviceError,
                       match=r"no NVIDIA driver \(libcuda.so.1: .*install the NVIDIA driver"):
        bard_sdk.load(tiny_artifact, device="cuda")
    assert preloads == [], "no preload without a driver"


@linux_only
def test_preload_runs_once_before_the_cuda_session(
        tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, {})
    monkeypatch.setattr(cuda, "cuda_runtime_problem", lambda major: None)
    events: list[str] = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: events.append("preload"), raising=False)
    real = ort.InferenceSession

    def session(model: bytes, options: ort.SessionOptions, providers: list[str]
                ) -> ort.InferenceSession:
        events.append("+".join(p[:4] for p in providers))
        return real(model, options, providers=[runtime.CPU])  # CUDA "fails to start"

    monkeypatch.setattr(ort, "InferenceSession", session)
    for _ in range(2):
        assert bard_sdk.load(tiny_artifact).device == "cpu"
    assert events == ["preload", "CUDA+CPUE", "CPUE", "CUDA+CPUE", "CPUE"]
    with pytest.raises(bard_sdk.DeviceError, match=r"failed to start.*print_debug_info"):
        bard_sdk.load(tiny_artifact, device="cuda")


@linux_only
def test_a_cuda_session_that_raises_falls_back(
        tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pretend(monkeypatch, {})
    monkeypatch.setattr(cuda, "cuda_runtime_problem", lambda major: None)
    real = ort.InferenceSession

    def session(model: bytes, options: ort.SessionOptions, providers: list[str]
                ) -> ort.InferenceSession:
        if cuda.CUDA in providers:
            raise RuntimeError("CUDA failure 999: unknown error\nmore lines")
        return real(model, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.INFO, logger="bard_sdk"):
        assert bard_sdk.load(tiny_artifact).device == "cpu"
    assert bard_warnings(caplog) == [
        "bard_sdk: CUDA not used, running on the CPU: the CUDA execution provider failed to "
        "start (CUDA failure 999: unknown error)" + runtime.HINT]
    with pytest.raises(bard_sdk.DeviceError, match=r"failed to start \(CUDA failure 999"):
        bard_sdk.load(tiny_artifact, device="cuda")


def test_preload_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    cuda.preload_cuda_libraries()  # an onnxruntime older than 1.21: nothing to call


@pytest.mark.parametrize(("packages", "gpu_platform", "expected"), [
    (["onnxruntime"], True, r"onnxruntime .* is the CPU-only package; fix: pip uninstall -y "
     r"onnxruntime && pip install 'bard\[gpu\]'"),
    (["onnxruntime", "onnxruntime-gpu"], True, r"both onnxruntime and onnxruntime-gpu are "
     r"installed .*fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install"),
    (["onnxruntime"], False, r"PyPI has no CUDA build of onnxruntime for"),
])
def test_cuda_without_a_cuda_build_names_the_package_and_fix(
        tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        packages: list[str], gpu_platform: bool, expected: str) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [runtime.CPU])
    monkeypatch.setattr(cuda, "onnxruntime_packages", lambda: packages)
    monkeypatch.setattr(cuda, "gpu_wheels_exist", lambda: gpu_platform)
    with pytest.raises(bard_sdk.DeviceError, match=expected):
        bard_sdk.load(tiny_artifact, device="cuda")
    with caplog.at_level(logging.INFO, logger="bard_sdk"):
        assert bard_sdk.load(tiny_artifact).device == "cpu"
    assert bard_warnings(caplog) == [], "a CPU build chosen at install time is no news"


def test_unknown_device_is_refused(tiny_artifact: Path) -> None:
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda', got 'tpu'"):
        bard_sdk.load(tiny_artifact, device="tpu")


needs_ort_gpu = pytest.mark.skipif(
    cuda.CUDA not in ort.get_available_providers() or sys.platform != "linux",
    reason="needs onnxruntime-gpu on Linux (bard's base install on Linux x86_64)")


@needs_ort_gpu
def test_real_failed_cuda_start_is_quiet(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    """onnxruntime-gpu itself, asked for CUDA where CUDA cannot start, prints red multi-line
    errors by default; bard lets none of them through."""
    if cuda.check_cuda().problem is None:
        pytest.skip("CUDA works here")
    cuda.check_cuda.cache_clear()
    monkeypatch.setattr(runtime, "check_cuda", lambda: cuda.CudaCheck(None, gpu_here=True))
    with caplog.at_level(logging.INFO, logger="bard_sdk"):
        model = bard_sdk.load(tiny_artifact)
    assert model.device == "cpu" and len(model.generate("ROMEO:", 20, seed=1)) == 20
    warned = bard_warnings(caplog)
    assert len(warned) == 1 and "CUDA execution provider failed to start" in warned[0]
    out, err = capfd.readouterr()
    assert "[E:onnxruntime" not in err and "[W:onnxruntime" not in err, err
    assert "Failed to" not in out + err, out + err


@needs_ort_gpu
def test_real_check_names_what_this_machine_lacks(tiny_artifact: Path) -> None:
    problem = cuda.check_cuda().problem
    if problem is None:
        pytest.skip("CUDA works here")
    assert "; fix: " in problem and "\n" not in problem
    with pytest.raises(bard_sdk.DeviceError) as caught:
        bard_sdk.load(tiny_artifact, device="cuda")
    assert str(caught.value) == f"device='cuda' but {problem}"


def test_cuda_runtime_problem_reads_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CUDA runtime where one is installed without a GPU: it says why it counts none."""
    if cuda.loader_error("libcudart.so.13") is not None:
        pytest.skip("no CUDA 13 runtime library here")
    if cuda.loader_error(cuda.DRIVER) is None:
        pytest.skip("an NVIDIA driver is installed here")
    assert cuda.cuda_runtime_problem(13) == (
        "the CUDA 13 runtime finds no usable GPU (CUDA driver version is insufficient for CUDA "
        "runtime version); fix: update the NVIDIA driver")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda.cuda_runtime_problem(13).endswith("fix: check CUDA_VISIBLE_DEVICES=''")


def test_cli_cuda_refusal_is_one_line(tmp_path: Path) -> None:
    if cuda.check_cuda().problem is None:
        pytest.skip("CUDA works here")
    for args in (["generate", "ROMEO:", "-n", "5", "--device", "cuda"],
                 ["bench", "--quick", "--device", "cuda", "--out", str(tmp_path / "out")]):
        result = bard_cli(*args)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("bard: error: --device cuda but "), result.stderr
        assert "Traceback" not in result.stderr and "onnxruntime::" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_auto_without_cuda_says_at_most_one_line() -> None:
    if cuda.check_cuda().problem is None:
        pytest.skip("CUDA works here")
    result = bard_cli("generate", "ROMEO:", "-n", "5", "--seed", "1", check=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    warned = [line for line in lines if line.startswith("bard_sdk: CUDA not used")]
    assert [line for line in lines if line not in warned] == ["[shakespeare on cpu, fp32]"]
    assert len(warned) <= 1, result.stderr
