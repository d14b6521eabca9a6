"""bard serve: an OpenAI-compatible HTTP layer over `bard_sdk.Engine` (no generation logic)."""
