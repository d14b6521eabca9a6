"""Can onnxruntime's CUDA execution provider start here? If not: which piece is missing, and
the command that adds it.

onnxruntime-gpu does not bundle CUDA or cuDNN. `bard[gpu]` installs them from pip as nvidia-*
wheels (onnxruntime-gpu's own `cuda` and `cudnn` extras), and `onnxruntime.preload_dlls()`
loads those copies into the process before a CUDA session is created. The check asks the
dynamic loader, the way onnxruntime would, before onnxruntime is asked: a CPU fallback then
never lets onnxruntime print its multi-line errors, and a refusal names the missing piece.
It runs once per process (the answer does not change while the process lives).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

import onnxruntime as ort

log = logging.getLogger("bard_sdk")

CUDA = "CUDAExecutionProvider"
FIX_INSTALL = "pip install 'bard[gpu]'"
DRIVER = "libcuda.so.1"


@dataclass(frozen=True)
class CudaCheck:
    """`problem` is None when CUDA should start, else one line: what is missing; fix: command.
    `gpu_here` says an NVIDIA driver is installed, so falling back to the CPU is news worth a
    warning (on a machine without one, the CPU is simply what there is)."""

    problem: str | None
    gpu_here: bool


def onnxruntime_packages() -> list[str]:
    """Which of the two distributions that both install the `onnxruntime` module are present."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            metadata.distribution(name)
            found.append(name)
    return found


def gpu_wheels_exist() -> bool:
    """onnxruntime-gpu is published for Linux x86_64 and Windows x64 only (pyproject markers)."""
    machine = platform.machine().lower()
    return (sys.platform == "linux" and machine == "x86_64") or (
        sys.platform == "win32" and machine == "amd64")


def no_provider_problem() -> str:
    """Why this onnxruntime offers no CUDA execution provider, and the fix."""
    packages = onnxruntime_packages()
    if not gpu_wheels_exist():
        return (f"PyPI has no CUDA build of onnxruntime for {sys.platform} "
                f"{platform.machine()} (only for Linux x86_64 and Windows x64)")
    if packages == ["onnxruntime", "onnxruntime-gpu"]:
        return ("both onnxruntime and onnxruntime-gpu are installed (one module, two packages; "
                "the CPU one won); fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
                f"{FIX_INSTALL}")
    if packages == ["onnxruntime"]:
        return (f"onnxruntime {ort.__version__} is the CPU-only package; fix: "
                f"pip uninstall -y onnxruntime && {FIX_INSTALL}")
    return (f"this onnxruntime {ort.__version__} has no CUDA execution provider (available: "
            f"{', '.join(ort.get_available_providers())}); fix: "
            f"pip install --force-reinstall 'bard[gpu]'")


def loader_error(library: str) -> str | None:
    """None if the dynamic loader opens `library` by name (as onnxruntime does), else why not."""
    try:
        ctypes.CDLL(library)
    except OSError as err:
        return str(err)
    return None


def built_for_cuda() -> int | None:
    """The CUDA major version this onnxruntime-gpu was built against (13 for 1.31)."""
    try:
        from onnxruntime.capi import build_and_package_info as info
        return int(str(info.cuda_version).split(".")[0])
    except (ImportError, AttributeError, ValueError):
        return None


def cuda_libraries(major: int) -> list[str]:
    """What libonnxruntime_providers_cuda.so links against (CUDA runtime, cuBLAS, cuRAND) and
    cuDNN 9, which its LSTM kernel opens when the session is built."""
    return [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}",
            "libcurand.so.10", "libcudnn.so.9"]


@functools.cache
def preload_cuda_libraries() -> None:
    """`onnxruntime.preload_dlls()` (onnxruntime-gpu >= 1.21), once: it loads CUDA and cuDNN
    from pip's nvidia-* wheels, which no library search path names. It prints what it could
    not load; that goes to the debug log, since `check_cuda` names what is missing itself."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except (OSError, RuntimeError) as err:  # best effort: the loader check below decides
        log.debug("onnxruntime.preload_dlls() failed: %s", err)
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls(): %s", printed.getvalue().strip())


def cuda_runtime_problem(major: int) -> str | None:
    """None if the CUDA runtime counts at least one GPU, else why not (an old driver, a hidden
    device): the cases a loadable driver still leaves."""
    cudart = ctypes.CDLL(f"libcudart.so.{major}")
    cudart.cudaGetErrorString.restype = ctypes.c_char_p
    count = ctypes.c_int(0)
    code = cudart.cudaGetDeviceCount(ctypes.byref(count))
    if code == 0 and count.value > 0:
        return None
    reason = cudart.cudaGetErrorString(code).decode() if code else "no device"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    fix = (f"check CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None
           else "update the NVIDIA driver" if "insufficient" in reason else "check nvidia-smi")
    return f"the CUDA {major} runtime finds no usable GPU ({reason}); fix: {fix}"


@functools.cache
def check_cuda() -> CudaCheck:
    """Everything CUDA needs, checked in the order a fix has to happen: the onnxruntime build,
    the driver, the CUDA and cuDNN libraries, a visible GPU."""
    if CUDA not in ort.get_available_providers():
        return CudaCheck(no_provider_problem(), gpu_here=False)
    if sys.platform != "linux":  # no sonames to check: onnxruntime's own attempt decides
        preload_cuda_libraries()
        return CudaCheck(None, gpu_here=True)
    driver = loader_error(DRIVER)
    if driver is not None:
        return CudaCheck(f"no NVIDIA driver ({driver}); fix: install the NVIDIA driver "
                         "(nvidia-smi must work)", gpu_here=False)
    preload_cuda_libraries()
    major = built_for_cuda()
    if major is None:
        return CudaCheck(None, gpu_here=True)
    missing = [lib for lib in cuda_libraries(major) if loader_error(lib) is not None]
    if missing:
        return CudaCheck(f"CUDA {major} / cuDNN 9 libraries not found: {', '.join(missing)}; "
                         f"fix: {FIX_INSTALL}", gpu_here=True)
    return CudaCheck(cuda_runtime_problem(major), gpu_here=True)
