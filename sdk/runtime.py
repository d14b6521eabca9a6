"""onnxruntime sessions and the two ways to step the LSTM graph.

`HostRunner` passes numpy arrays to `InferenceSession.run`: the simplest and fastest path on
the CPU. `BoundRunner` keeps the recurrent state as OrtValues on the execution device through
IOBinding, so on CUDA only the last step's logits cross to the host per character.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from .errors import DeviceError

log = logging.getLogger("bard_sdk")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def session_options(threads: int | None) -> ort.SessionOptions:
    """Deliberate settings: all graph optimisations, a fixed intra-op pool, no inter-op pool
    (one LSTM chain has nothing to run in parallel), sequential execution."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def create_session(model: bytes, device: str,
                   threads: int | None) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on `device` ('auto', 'cpu' or 'cuda') and the device it got."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    options = session_options(threads)
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and CUDA in available:
        session = ort.InferenceSession(model, options, providers=[CUDA, CPU])
        if session.get_providers()[0] == CUDA:
            log.info("bard_sdk: running on CUDA")
            return session, "cuda"
        if device == "cuda":
            raise DeviceError("CUDA execution provider is installed but failed to start")
    elif device == "cuda":
        raise DeviceError(
            "device='cuda' but this onnxruntime has no CUDA execution provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu")
    log.info("bard_sdk: running on CPU")
    return ort.InferenceSession(model, options, providers=[CPU]), "cpu"


class State(Protocol):
    """The recurrent state of a batch, wherever it lives."""

    def select(self, rows: np.ndarray) -> State: ...

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class HostState:
    h: np.ndarray
    c: np.ndarray

    def select(self, rows: np.ndarray) -> HostState:
        return HostState(self.h[:, rows], self.c[:, rows])

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h, self.c


class Runner(Protocol):
    def state(self, h: np.ndarray, c: np.ndarray) -> State: ...

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...


class HostRunner:
    """numpy in, numpy out: `InferenceSession.run` with the state as host arrays."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.names = ["logits", "hn", "cn"]

    def state(self, h: np.ndarray, c: np.ndarray) -> HostState:
        return HostState(np.ascontiguousarray(h, np.float32), np.ascontiguousarray(c, np.float32))

    def step(self, tokens: np.ndarray, state: HostState) -> tuple[np.ndarray, HostState]:
        logits, h, c = self.session.run(self.names, {"tokens": tokens, "h0": state.h,
                                                     "c0": state.c})
        return logits, HostState(h, c)


@dataclass
class DeviceState:
    h: ort.OrtValue
    c: ort.OrtValue
    device: str
    device_id: int

    def select(self, rows: np.ndarray) -> DeviceState:
        # Only when rows finish: a round trip through the host, then back to the device.
        h, c = self.to_numpy()
        return DeviceState(
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(h[:, rows]), self.device,
                                             self.device_id),
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(c[:, rows]), self.device,
                                             self.device_id),
            self.device, self.device_id)

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h.numpy(), self.c.numpy()


class BoundRunner:
    """IOBinding: the state stays on the device; only logits come back to the host."""

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int = 0) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id

    def state(self, h: np.ndarray, c: np.ndarray) -> DeviceState:
        def put(array: np.ndarray) -> ort.OrtValue:
            return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, np.float32),
                                                    self.device, self.device_id)
        return DeviceState(put(h), put(c), self.device, self.device_id)

    def step(self, tokens: np.ndarray, state: DeviceState) -> tuple[np.ndarray, DeviceState]:
        binding = self.session.io_binding()
        binding.bind_cpu_input("tokens", tokens)
        binding.bind_ortvalue_input("h0", state.h)
        binding.bind_ortvalue_input("c0", state.c)
        binding.bind_output("logits", "cpu")
        binding.bind_output("hn", self.device, self.device_id)
        binding.bind_output("cn", self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        logits, h, c = binding.get_outputs()
        return logits.numpy(), DeviceState(h, c, self.device, self.device_id)


def make_runner(session: ort.InferenceSession, device: str) -> HostRunner | BoundRunner:
    return BoundRunner(session, "cuda") if device == "cuda" else HostRunner(session)
