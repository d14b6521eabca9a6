"""bard.training: the PyTorch side: model, data pipeline, training loop, checkpoints."""
