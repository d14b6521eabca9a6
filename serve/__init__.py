"""bard serve: an OpenAI-compatible HTTP layer over `bard_sdk.Engine` (no generation logic),
and its Ray Serve deployment for replicas across machines (`bard.serve.ray`)."""
