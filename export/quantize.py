"""int8 by onnxruntime's dynamic quantisation: LSTM -> DynamicQuantizeLSTM (CPU kernel)."""

from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


def quantize_int8(source: Path, target: Path) -> None:
    """Weights to int8 per tensor; activations are quantised on the fly at run time."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["LSTM", "MatMul"])
    finally:
        root.setLevel(level)
