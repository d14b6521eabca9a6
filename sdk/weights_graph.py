"""Sampling weights exp((logits - row max) / temperature) computed by onnxruntime.

At a large vocabulary the float32 exp over [batch, vocab] is most of a sampled step, and
onnxruntime's (MLAS, vectorised) is 2-3x faster than numpy's on the AVX2 machines measured
(BENCHMARKS.md, "Large vocabularies"). The graph is four nodes (ReduceMax, Sub, Mul, Exp),
elementwise but for the row max, so a row's weights do not depend on the rows beside it.

The SDK depends on onnxruntime only (not the `onnx` package), so the ModelProto is written
here with the few protobuf fields it needs; tests/sdk/test_sampling.py checks it against
`onnx.checker` and `onnx.helper`'s own encoding of the same graph.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

OPSET = 13  # ReduceMax takes `axes` as an attribute up to opset 17
IR_VERSION = 7
FLOAT, INTS, INT = 1, 7, 2  # TensorProto.FLOAT; AttributeProto.INTS / INT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _text(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def _node(op: str, inputs: list[str], outputs: list[str], attributes: bytes = b"") -> bytes:
    """NodeProto: input 1, output 2, op_type 4, attribute 5."""
    return (b"".join(_text(1, name) for name in inputs)
            + b"".join(_text(2, name) for name in outputs) + _text(4, op) + attributes)


def _tensor(name: str, dims: list[int | str]) -> bytes:
    """ValueInfoProto of a float tensor; a str dim is symbolic (dim_param), an int fixed."""
    shape = b"".join(_bytes(1, _text(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    return _text(1, name) + _bytes(2, _bytes(1, _int(1, FLOAT) + _bytes(2, shape)))


def weights_model() -> bytes:
    """The serialized ModelProto: w = Exp((z - ReduceMax(z, axis 1)) * scale)."""
    row_max = _bytes(5, _text(1, "axes") + _int(8, 1) + _int(20, INTS)) + _bytes(
        5, _text(1, "keepdims") + _int(3, 1) + _int(20, INT))
    nodes = [_node("ReduceMax", ["z"], ["top"], row_max), _node("Sub", ["z", "top"], ["d"]),
             _node("Mul", ["d", "scale"], ["e"]), _node("Exp", ["e"], ["w"])]
    graph = (b"".join(_bytes(1, n) for n in nodes) + _text(2, "bard_sampling_weights")
             + _bytes(11, _tensor("z", ["rows", "vocab"])) + _bytes(11, _tensor("scale", [1]))
             + _bytes(12, _tensor("w", ["rows", "vocab"])))
    opset = _text(1, "") + _int(2, OPSET)
    return _int(1, IR_VERSION) + _text(2, "bard_sdk") + _bytes(7, graph) + _bytes(8, opset)


_session: ort.InferenceSession | None = None
_lock = threading.Lock()


def _weights_session() -> ort.InferenceSession:
    """One CPU session per process, made on first use: one thread (it runs between two model
    steps, on the caller's thread, and so an element's result never depends on how the work
    was split)."""
    global _session
    with _lock:
        if _session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            _session = ort.InferenceSession(weights_model(), options,
                                            providers=["CPUExecutionProvider"])
        return _session


_buffers = threading.local()


def exp_weights(z: np.ndarray, scale: np.float32) -> np.ndarray:
    """exp((z - row max) x scale) in float32 for contiguous float32 z [rows, vocab], the
    largest weight of each row 1, -inf logits 0. The result is written into a buffer kept per
    thread and shape (valid until this thread's next call): a fresh 1.5 MB array per step
    at batch 64 x 6,005 costs page faults that are a measurable share of the step.
    Callers use the weights before they return (sampling.sample does)."""
    session = _weights_session()
    cached = getattr(_buffers, "entry", None)
    if cached is None or cached[0].shape != z.shape:
        out = np.empty(z.shape, dtype=np.float32)
        binding = session.io_binding()
        binding.bind_output("w", "cpu", 0, np.float32, list(z.shape), out.ctypes.data)
        scale_array = np.empty(1, dtype=np.float32)
        _buffers.entry = cached = (out, binding, scale_array)
    out, binding, scale_array = cached
    scale_array[0] = scale
    binding.bind_cpu_input("z", z)
    binding.bind_cpu_input("scale", scale_array)
    session.run_with_iobinding(binding)
    return out
