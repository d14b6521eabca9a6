"""The writing room as `bard serve`'s playground: the same page, talking to the server.

The server serves the page and its scripts from here, and a bard-site.json that tells the page
to use the server's /v1/completions instead of running a model itself. Nothing is templated
into the page: the model id reaches it inside JSON, and the page puts it in as text.
"""

from __future__ import annotations

from typing import Any

from .site import IMPORT_MAP_SLOT, static_text

PLAYGROUND_ASSETS = {"bard.js": "text/javascript", "room.js": "text/javascript",
                     "room.css": "text/css"}


def playground_page() -> str:
    """index.html without an import map (the server page loads no onnxruntime-web)."""
    return static_text("index.html").replace(IMPORT_MAP_SLOT, "")


def playground_asset(name: str) -> tuple[str, str]:
    """(text, media type) of one of the page's files."""
    return static_text(name), PLAYGROUND_ASSETS[name]


def server_config(model_id: str, completions: str = "/v1/completions") -> dict[str, Any]:
    return {"generator": "bard serve", "mode": "server", "model": model_id,
            "completions": completions}
