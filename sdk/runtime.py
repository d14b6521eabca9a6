"""onnxruntime sessions and the two ways to step the LSTM graph.

`HostRunner` passes numpy arrays to `InferenceSession.run`: the simplest and fastest path on
the CPU. `BoundRunner` keeps the recurrent state as OrtValues on the execution device through
IOBinding, so on CUDA only the last step's logits cross to the host per character.

Sessions are created from the model's bytes with the external-initializer folder set to a fresh
empty directory: the second wall behind `onnx_scan`. Should the scan ever miss an external
reference, onnxruntime resolves it inside that empty directory (and refuses absolute paths and
`..`), so it cannot read a file of the user's.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from .arguments import describe, integer
from .contract import C0, CN, H0, HN, LOGITS, OUTPUT_NAMES, TOKENS
from .cuda import CUDA, check_cuda
from .errors import ArtifactError, DeviceError, InvalidArgumentError

log = logging.getLogger("bard_sdk")

CPU = "CPUExecutionProvider"
# When a model is loaded from bytes, onnxruntime resolves external data against this folder
# (onnxruntime_session_options_config_keys.h) instead of the current working directory.
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
# onnxruntime's exceptions that mean "this model cannot be loaded or run" (not a device fault).
_ORT = ort.capi.onnxruntime_pybind11_state
MODEL_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ORT, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                                     "NoSuchFile", "NoModel", "NotImplemented", "NotFound")
    if isinstance(getattr(_ORT, name, None), type))


@dataclass(frozen=True)
class ThreadSettings:
    """onnxruntime's intra-op pool: its size (None: one per core) and whether its workers
    spin-wait between calls. Spinning shortens each call when the process has the cores to
    itself; a server whose event loop and clients share the cores wants them to sleep."""

    count: int | None = None
    spin: bool = True


def session_options(threads: ThreadSettings) -> ort.SessionOptions:
    """Deliberate settings: all graph optimisations, a fixed intra-op pool, no inter-op pool
    (one LSTM chain has nothing to run in parallel), sequential execution."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads.count is not None:
        options.intra_op_num_threads = integer(threads.count, "threads", minimum=1,
                                               maximum=4096)
    if not isinstance(threads.spin, bool):
        raise InvalidArgumentError(f"spin must be True or False, got {describe(threads.spin)}")
    if not threads.spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def create_session(model: bytes, device: str,
                   threads: ThreadSettings) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on `device` ('auto', 'cpu' or 'cuda') and the device it got.

    'cuda' without a usable GPU raises DeviceError naming the missing piece and the fix;
    'auto' falls back to the CPU, with one warning per process and reason when a GPU is
    evidently there (an NVIDIA driver) but CUDA cannot use it. A model onnxruntime cannot load
    is an ArtifactError on every device."""
    if not isinstance(device, str) or device not in ("auto", "cpu", "cuda"):
        raise InvalidArgumentError(f"device must be 'auto', 'cpu' or 'cuda', got "
                                   f"{describe(device)}")
    session_options(threads)  # checks `threads` before any work
    if device == "cpu":
        return inference_session(model, threads, [CPU]), "cpu"
    check = check_cuda()
    problem = check.problem
    if problem is None:
        session, problem = cuda_session(model, threads)
        if session is not None:
            log.info("bard_sdk: running on CUDA")
            return session, "cuda"
    if device == "cuda":
        if check.problem is None:  # it raised: a broken model fails the CPU too, as itself
            inference_session(model, threads, [CPU])
        raise DeviceError(f"device='cuda' but {problem}")
    session = inference_session(model, threads, [CPU])
    if check.gpu_here:
        warn_once(f"bard_sdk: CUDA not used, running on the CPU: {problem}")
    log.info("bard_sdk: running on CPU")
    return session, "cpu"


def inference_session(model: bytes, threads: ThreadSettings,
                      providers: list[str]) -> ort.InferenceSession:
    """onnxruntime's session over `model` (see `walled_session`); onnxruntime's refusal of a
    broken or hostile graph becomes an ArtifactError."""
    try:
        return walled_session(model, threads, providers)
    except MODEL_ERRORS as err:
        raise ArtifactError(f"onnxruntime cannot load the model: {first_line(err)}") from None


def walled_session(model: bytes, threads: ThreadSettings,
                   providers: list[str]) -> ort.InferenceSession:
    """A session with external data confined to an empty folder."""
    options = session_options(threads)
    with tempfile.TemporaryDirectory(prefix="bard-no-external-data-") as empty:
        options.add_session_config_entry(EXTERNAL_FOLDER_KEY, empty)
        return ort.InferenceSession(model, options, providers=providers)


def cuda_session(model: bytes, threads: ThreadSettings
                 ) -> tuple[ort.InferenceSession | None, str | None]:
    """A session whose first provider is CUDA, or None and why not. onnxruntime reports a
    provider that fails to start through its default logger as multi-line errors, even with
    the session's own log level raised, so that logger is silenced for the attempt and then
    returned to onnxruntime's default level (warning)."""
    ort.set_default_logger_severity(4)
    try:
        session = walled_session(model, threads, [CUDA, CPU])
    except Exception as err:  # a device fault and a model fault raise the same types here
        return None, f"the CUDA execution provider failed to start ({first_line(err)}){HINT}"
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] != CUDA:
        return None, ("the CUDA execution provider failed to start (onnxruntime "
                      f"{ort.__version__} fell back to the CPU){HINT}")
    return session, None


HINT = ("; see what onnxruntime finds: python -c 'import onnxruntime as o; o.preload_dlls(); "
        "o.print_debug_info()'")


def first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One line on the `bard_sdk` logger at WARNING, once per process per message."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


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
        self.names = list(OUTPUT_NAMES)

    def state(self, h: np.ndarray, c: np.ndarray) -> HostState:
        return HostState(np.ascontiguousarray(h, np.float32), np.ascontiguousarray(c, np.float32))

    def step(self, tokens: np.ndarray, state: HostState) -> tuple[np.ndarray, HostState]:
        logits, h, c = self.session.run(self.names, {TOKENS: tokens, H0: state.h,
                                                     C0: state.c})
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
        binding.bind_cpu_input(TOKENS, tokens)
        binding.bind_ortvalue_input(H0, state.h)
        binding.bind_ortvalue_input(C0, state.c)
        binding.bind_output(LOGITS, "cpu")
        binding.bind_output(HN, self.device, self.device_id)
        binding.bind_output(CN, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        logits, h, c = binding.get_outputs()
        return logits.numpy(), DeviceState(h, c, self.device, self.device_id)


def make_runner(session: ort.InferenceSession, device: str) -> HostRunner | BoundRunner:
    return BoundRunner(session, "cuda") if device == "cuda" else HostRunner(session)
