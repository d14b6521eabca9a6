"""Sampling probabilities softmax(logits / temperature), and their sums by blocks of
BLOCK characters, computed by onnxruntime.

At a large vocabulary the float32 exp over [batch, vocab] is most of a sampled step.
onnxruntime's Softmax (MLAS: the row max, then exp and sum in one vectorised pass, then the
scaling) is 2-3x faster than numpy's exp alone on the AVX2 machines measured, and faster than
a graph of ReduceMax, Sub, Mul and Exp, whose broadcasting elementwise kernels each make a
pass of their own (BENCHMARKS.md, "Large vocabularies"). The scaled logits are written by
numpy into a buffer whose rows are padded with -inf to a whole number of blocks, so the
block sums are a Reshape and a ReduceSum in the same run (the inverse CDF by blocks needs
them) and the padding weighs 0. Every node works within a row (a block lies inside one), so
a row's numbers do not depend on the rows beside it.

The SDK depends on onnxruntime only (not the `onnx` package), so the ModelProto is written
here with the few protobuf fields it needs; tests/sdk/test_sampling.py checks it against
`onnx.checker` and `onnx.helper`'s own encoding of the same graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .large_vocab import BLOCK

OPSET = 13  # Softmax over one axis (before 13 it flattened the trailing axes)
IR_VERSION = 7
FLOAT, INT64 = 1, 7  # TensorProto.FLOAT / INT64
INT = 2  # AttributeProto.INT


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


def _int64s(name: str, values: list[int]) -> bytes:
    """TensorProto of a 1-D int64 initializer: dims 1, data_type 2, name 8, raw_data 9."""
    raw = np.array(values, dtype="<i8").tobytes()
    return (_int(1, len(values)) + _int(2, INT64) + _text(8, name) + _bytes(9, raw))


def softmax_model() -> bytes:
    """The serialized ModelProto: p = Softmax(y, axis=1) over y [rows, padded vocab], and
    sums = ReduceSum(Reshape(p, [-1, BLOCK]), axes=[1]) [rows x blocks]."""
    axis = _bytes(5, _text(1, "axis") + _int(3, 1) + _int(20, INT))
    flat = _bytes(5, _text(1, "keepdims") + _int(3, 0) + _int(20, INT))
    nodes = [_node("Softmax", ["y"], ["p"], axis),
             _node("Reshape", ["p", "block_shape"], ["blocks"]),
             _node("ReduceSum", ["blocks", "block_axis"], ["sums"], flat)]
    graph = (b"".join(_bytes(1, n) for n in nodes) + _text(2, "bard_sampling_softmax")
             + _bytes(5, _int64s("block_shape", [-1, BLOCK]))
             + _bytes(5, _int64s("block_axis", [1]))
             + _bytes(11, _tensor("y", ["rows", "padded_vocab"]))
             + _bytes(12, _tensor("p", ["rows", "padded_vocab"]))
             + _bytes(12, _tensor("sums", ["row_blocks"])))
    opset = _text(1, "") + _int(2, OPSET)
    return _int(1, IR_VERSION) + _text(2, "bard_sdk") + _bytes(7, graph) + _bytes(8, opset)


_session: ort.InferenceSession | None = None
_lock = threading.Lock()


def _softmax_session() -> ort.InferenceSession:
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
            _session = ort.InferenceSession(softmax_model(), options,
                                            providers=["CPUExecutionProvider"])
        return _session


_buffers = threading.local()


@dataclass
class _Buffers:
    """One thread's input and output buffers for rows x vocab, grown, never shrunk."""

    rows: int
    vocab: int
    scaled: np.ndarray  # [rows, padded vocab]; the padding columns stay -inf
    probabilities: np.ndarray  # [rows, padded vocab]
    sums: np.ndarray  # [rows, blocks]
    binding: ort.IOBinding
    bound_rows: int = -1

    @classmethod
    def new(cls, session: ort.InferenceSession, rows: int, vocab: int) -> _Buffers:
        padded = -(-vocab // BLOCK) * BLOCK
        scaled = np.full((rows, padded), -np.inf, dtype=np.float32)
        return cls(rows, vocab, scaled, np.empty_like(scaled),
                   np.empty((rows, padded // BLOCK), dtype=np.float32), session.io_binding())


def softmax_blocks(z: np.ndarray, scale: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """softmax(z x scale) per row in float32 for float32 z [rows, vocab], as
    [rows, vocab rounded up to BLOCK] (the padding columns 0; -inf logits 0 too; a row sums
    to 1 within float32 rounding), and its sums by blocks of BLOCK columns [rows, blocks].

    Both are views of buffers kept per thread and grown with the rows (valid until this
    thread's next call): a fresh 1.5 MB array per step at batch 64 x 6,005 costs page
    faults that are a measurable share of the step, and an engine's batch changes size
    between steps. Callers use them before they return (sampling.sample does)."""
    session = _softmax_session()
    rows, vocab = z.shape
    buffers: _Buffers | None = getattr(_buffers, "entry", None)
    if buffers is None or buffers.vocab != vocab or buffers.rows < rows:
        grown = max(rows, 2 * buffers.rows if buffers is not None and
                    buffers.vocab == vocab else 0)
        buffers = _buffers.entry = _Buffers.new(session, grown, vocab)
    scaled = buffers.scaled[:rows]
    probabilities, sums = buffers.probabilities[:rows], buffers.sums[:rows]
    np.multiply(z, scale, out=scaled[:, :vocab])
    binding = buffers.binding
    if buffers.bound_rows != rows:
        binding.bind_output("p", "cpu", 0, np.float32, list(probabilities.shape),
                            probabilities.ctypes.data)
        binding.bind_output("sums", "cpu", 0, np.float32, [sums.size], sums.ctypes.data)
        buffers.bound_rows = rows
    binding.bind_cpu_input("y", scaled)
    session.run_with_iobinding(binding)
    return probabilities, sums
