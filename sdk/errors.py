"""The errors bard_sdk raises at its boundary; each names the problem in one line."""


class BardError(Exception):
    """Base class for every error bard_sdk raises on purpose."""


class InvalidArgumentError(BardError, ValueError):
    """An argument the caller passed is of the wrong type or out of range. `param` names
    the argument (as the SDK calls it) when the error is about one, so a layer above (the
    HTTP server) can point at its own field without reading the message."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ArtifactError(BardError, ValueError):
    """An artifact directory is missing, corrupt, tampered with, or from a newer format."""


class UnknownCharacterError(BardError, ValueError):
    """Text holds characters the model's vocabulary lacks (with on_unknown='error')."""

    def __init__(self, unknown: list[tuple[int, str]], total: int, *,
                 more_may_follow: bool = False) -> None:
        shown = ", ".join(f"{ch!r} at {pos}" for pos, ch in unknown[:10])
        more = f" and {total - 10} more" if total > 10 else ""
        # `summary` names the characters; the hint after it is in the API's spelling (the
        # CLI gives its own: --on-unknown skip). A text read piece by piece stops at the
        # first piece that has any (more_may_follow).
        self.summary = (f"characters not in the model's vocabulary, the first: {shown}"
                        if more_may_follow else
                        f"{total} character(s) not in the model's vocabulary: {shown}{more}")
        super().__init__(f"{self.summary} (pass on_unknown='skip' or 'replace')")
        self.param = "prompt"  # the text that was encoded; a layer above may know better
        self.positions = [pos for pos, _ in unknown]
        self.characters = sorted({ch for _, ch in unknown})


class DeviceError(BardError, RuntimeError):
    """The requested execution device is not available in this onnxruntime."""


class EngineOverloaded(BardError, RuntimeError):
    """The engine's batch and queue are full: retry later (HTTP 429/503 in `bard serve`)."""


class EngineClosed(BardError, RuntimeError):
    """The engine was closed; requests still running when it closed fail with this."""
