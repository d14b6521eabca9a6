"""Serve a site on this machine to try it: `python -m bard.web.preview SITE [--port N]`.

Any static host serves a bard site; this one adds the two headers (COOP/COEP) that make the
page cross-origin isolated, which onnxruntime-web needs for more than one WASM thread, and
names the types of .mjs and .wasm files. It binds loopback unless told otherwise and prints
the URL it serves (with --port 0, the port the kernel chose).
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
                     "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cache-Control": "no-cache"}


class SiteHandler(SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
        ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
        ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a page load is dozens of requests."""


def make_server(site: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = functools.partial(SiteHandler, directory=str(site))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{port}/"


def serve(site: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until interrupted; the first line on stderr names the URL."""
    server = make_server(site, host, port)
    print(f"bard web: serving {site} at {url_of(server)}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bard.web.preview", description=__doc__)
    parser.add_argument("site", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.exit(2, f"bard: error: {args.site} holds no index.html (write it with "
                       "`bard web --out SITE`)\n")
    try:
        serve(args.site, args.host, args.port)
    except OSError as err:
        parser.exit(2, f"bard: error: cannot serve on {args.host}:{args.port}: "
                       f"{err.strerror or err}\n")


if __name__ == "__main__":
    main()
