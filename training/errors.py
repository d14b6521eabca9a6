"""Errors a user can cause in training; the CLI turns them into one line and an exit code."""


class UsageError(ValueError):
    """Bad input: a missing or unreadable corpus, a nonsensical size, a clashing run directory."""


class TrainingDiverged(RuntimeError):
    """The loss, the gradient, the weights or the validation loss stopped being finite.

    `advice` is what the user can do next, worked out by the trainer from what is on disk (a
    checkpoint to resume from, or nothing)."""

    def __init__(self, step: int, what: str, advice: str = "") -> None:
        super().__init__(f"training stopped at step {step}: the {what} is not finite"
                         + (f"; {advice}" if advice else ""))
        self.step = step
        self.what = what


class StoppedBeforeStart(RuntimeError):
    """SIGINT/SIGTERM arrived before the first training step: there was nothing to
    checkpoint, so what a new run had written was removed (the --out can be reused)."""

    def __init__(self, signum: int, advice: str = "") -> None:
        super().__init__(f"stopped by signal {signum} before the first training step"
                         + (f"; {advice}" if advice else ""))
        self.signum = signum
