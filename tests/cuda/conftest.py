"""Tests that need an NVIDIA GPU (marked `cuda`): skipped elsewhere with the reason, and under
`make gpu-check` (BARD_REQUIRE_CUDA=1) a missing GPU stops the run instead of passing it."""

from __future__ import annotations

import os

import pytest

# cuBLAS reads this when it makes its first handle: fixed GEMM workspaces, so that a resumed
# CUDA run can equal a straight one bit for bit (PyTorch's reproducibility notes).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def gpu_problem() -> str | None:
    """Why PyTorch or onnxruntime cannot use a GPU here, or None."""
    import torch
    from bard_sdk.cuda import check_cuda

    problems = []
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        problems.append(f"torch {torch.__version__} ({build}) sees no CUDA device")
    ort_problem = check_cuda().problem
    if ort_problem is not None:
        problems.append(f"onnxruntime: {ort_problem}")
    return "; ".join(problems) or None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    problem = gpu_problem()
    if problem is None:
        return
    if os.environ.get("BARD_REQUIRE_CUDA") == "1":
        raise pytest.UsageError(f"BARD_REQUIRE_CUDA=1 but there is no usable GPU: {problem}")
    skip = pytest.mark.skip(reason=f"no usable GPU: {problem}")
    for item in marked:
        item.add_marker(skip)
