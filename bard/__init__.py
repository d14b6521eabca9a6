"""bard: train character LSTMs in PyTorch, ship them as ONNX, generate with bard_sdk."""

__version__ = "0.1.0"
