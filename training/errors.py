"""Errors a user can cause in training; the CLI turns them into one line and an exit code."""


class UsageError(ValueError):
    """Bad input: a missing or unreadable corpus, a nonsensical size, a clashing run directory."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stopped being finite; the last good checkpoint is kept."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(
            f"training stopped at step {step}: the {what} is not finite; "
            "the last good checkpoint is kept (lower --learning-rate or --grad-clip, then --resume)"
        )
        self.step = step
