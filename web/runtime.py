"""Where a site's onnxruntime-web comes from: a pinned CDN release, or a local npm copy.

Either way every runtime file is named with its SRI hash (sha384), so the page refuses a file
that is not the one this bard was built against. The CDN hashes below are those of the npm
package (jsDelivr serves the npm files byte for byte); `tests/web` checks them against the
package that `make test` installs from `web/package-lock.json`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bard_sdk import BardError

ORT_VERSION = "1.30.0"
CDN_BASE = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# Per build: the module the page imports, the glue it imports, and its WebAssembly binary.
BUILDS: dict[str, tuple[str, str, str]] = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs",
               "ort-wasm-simd-threaded.asyncify.wasm"),
}
PINNED_INTEGRITY = {
    "ort.wasm.min.mjs":
        "sha384-SfFfy/pvthiOsgaw3KX0bV5TfQ6Iq+oY9KutMe4SxIuHH4cl+DCSD4rTsYOoG1tJ",
    "ort-wasm-simd-threaded.mjs":
        "sha384-XcXA/MtAf0WpB8e023xQH9CM7RIjiugakT7x99DIwpFf7k56BIFFcAPerIF7FDad",
    "ort-wasm-simd-threaded.wasm":
        "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM",
    "ort.webgpu.min.mjs":
        "sha384-FPQBMbud8ICuP0Ii+Gr95KWEX9pKHtUC3lacIp0aPI8WYluKvTsEGQ3AE2Ze3QlL",
    "ort-wasm-simd-threaded.asyncify.mjs":
        "sha384-qViEcCGzsR/m8nlQwIsbYh7afN4thuraqFYDQY6huvmoLVoZq/eYawQ1wrv8nnhA",
    "ort-wasm-simd-threaded.asyncify.wasm":
        "sha384-EPVDLTxuO663dkZO/pcKJF6vOyyfq/5z9FY1oksN0UWFX2ABH4wDDZQHeNoUleWR",
}
LOCAL_DIR = "ort"  # where a local runtime is copied inside the site


class SiteError(BardError, ValueError):
    """A site cannot be written as asked (its runtime, its output folder)."""


@dataclass(frozen=True)
class Runtime:
    """The runtime a site uses: `base` is the URL (absolute, or relative to the site) of the
    folder holding the files; `copy_from` is the local folder to copy them from (None: CDN)."""

    version: str
    base: str
    builds: tuple[str, ...]
    integrity: dict[str, str]
    copy_from: Path | None

    def files(self) -> list[str]:
        return [name for build in self.builds for name in BUILDS[build]]

    def config(self) -> dict[str, object]:
        """The runtime section of bard-site.json."""
        return {"version": self.version, "base": self.base,
                "source": "local" if self.copy_from else "cdn",
                "builds": {b: dict(zip(("module", "glue", "binary"), BUILDS[b]))
                           for b in self.builds},
                "integrity": {name: self.integrity[name] for name in self.files()}}


def sri_sha384(path: Path) -> str:
    digest = hashlib.sha384()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha384-" + base64.b64encode(digest.digest()).decode("ascii")


def cdn_runtime(builds: tuple[str, ...]) -> Runtime:
    return Runtime(ORT_VERSION, CDN_BASE, builds, dict(PINNED_INTEGRITY), None)


def package_dist(path: Path) -> tuple[Path, str]:
    """The dist folder and version of an onnxruntime-web package given as the package folder
    (node_modules/onnxruntime-web), its dist/, or the folder holding node_modules."""
    for candidate in (path / "node_modules" / "onnxruntime-web", path, path.parent):
        manifest = candidate / "package.json"
        if manifest.is_file():
            try:
                package = json.loads(manifest.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(package, dict) and package.get("name") == "onnxruntime-web":
                return candidate / "dist", str(package.get("version", "unknown"))
    raise SiteError(f"--runtime {path}: no onnxruntime-web package there (give the folder "
                        "of `npm install onnxruntime-web`, or its node_modules/onnxruntime-web)")


def local_runtime(path: Path, builds: tuple[str, ...]) -> Runtime:
    dist, version = package_dist(path)
    needed = [name for build in builds for name in BUILDS[build]]
    missing = [name for name in needed if not (dist / name).is_file()]
    if missing:
        raise SiteError(f"--runtime {path}: onnxruntime-web {version} lacks "
                            f"{', '.join(missing)} (bard web is built against {ORT_VERSION})")
    integrity = {name: sri_sha384(dist / name) for name in needed}
    return Runtime(version, f"./{LOCAL_DIR}/", builds, integrity, dist)


def resolve_runtime(source: str, webgpu: bool) -> Runtime:
    """`cdn` (the pinned release) or the path of a local onnxruntime-web package."""
    builds = ("wasm", "webgpu") if webgpu else ("wasm",)
    if source == "cdn":
        return cdn_runtime(builds)
    return local_runtime(Path(source), builds)
