"""Write the static site: page, JavaScript, artifact and runtime into one folder.

The folder is built under a temporary name beside the target and renamed into place, so a
reader never sees half a site. An existing target is replaced only if bard web wrote it
(it holds bard-site.json saying so) or it is empty.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import bard_sdk
from bard.training.fsutil import atomic_directory
from bard_sdk.manifest import MANIFEST_FILE

from bard import __version__

from .runtime import LOCAL_DIR, Runtime, SiteError, resolve_runtime

SITE_CONFIG = "bard-site.json"
GENERATOR = "bard web"
STATIC_FILES = ("index.html", "bard.js", "room.js", "room.css")
MODEL_DIR = "model"
IMPORT_MAP_SLOT = "<!--bard:importmap-->"


@dataclass(frozen=True)
class SiteRequest:
    out: Path
    model: Path | None = None
    runtime: str = "cdn"  # "cdn" or the path of a local onnxruntime-web package
    webgpu: bool = True


@dataclass(frozen=True)
class SiteResult:
    out: Path
    runtime: Runtime
    bytes: int


def static_text(name: str) -> str:
    return resources.files("bard.web").joinpath("static", name).read_text("utf-8")


def script_json(value: object) -> str:
    """JSON safe inside an HTML <script> element: <, > and & are escaped, so no text can
    close the element or open a comment."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, indent=1)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def import_map(runtime: Runtime) -> str:
    """An import map that pins every runtime module by its hash (the page imports them)."""
    modules = [name for name in runtime.files() if name.endswith(".mjs")]
    base = runtime.base
    return ('<script type="importmap">' + script_json(
        {"imports": {}, "integrity": {base + m: runtime.integrity[m] for m in modules}})
        + "</script>")


def site_config(model: bard_sdk.Model, runtime: Runtime) -> dict[str, object]:
    """What bard.js needs beyond the manifest: where the files are, which manifest format this
    bard reads, and the SDK's empty-prompt rule (the id an empty prompt is read as, or null)."""
    entry = model.manifest.file("fp32")
    return {"generator": GENERATOR, "bard_version": __version__,
            "mode": "local", "format_version": bard_sdk.FORMAT_VERSION,
            "manifest": f"{MODEL_DIR}/{MANIFEST_FILE}", "model": f"{MODEL_DIR}/{entry.path}",
            # null when the vocabulary has no newline: bard.js then refuses empty prompts
            "empty_prompt_id": model.prime_id, "runtime": runtime.config()}


def write_site_files(root: Path, model: bard_sdk.Model, runtime: Runtime) -> None:
    for name in STATIC_FILES:
        text = static_text(name)
        if name == "index.html":
            text = text.replace(IMPORT_MAP_SLOT, import_map(runtime))
        (root / name).write_text(text, "utf-8")
    (root / MODEL_DIR).mkdir()
    source = model.manifest.directory
    entry = model.manifest.file("fp32")
    for name in (MANIFEST_FILE, entry.path):
        shutil.copyfile(source / name, root / MODEL_DIR / name)
    if runtime.copy_from is not None:
        (root / LOCAL_DIR).mkdir()
        for name in runtime.files():
            shutil.copyfile(runtime.copy_from / name, root / LOCAL_DIR / name)
    config = json.dumps(site_config(model, runtime), indent=1, allow_nan=False)
    (root / SITE_CONFIG).write_text(config + "\n", "utf-8")


def replaceable(out: Path) -> bool:
    """True if `out` may be replaced: absent, empty, or a site bard web wrote."""
    if not out.exists() and not out.is_symlink():
        return True
    if out.is_symlink() or not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        config = json.loads((out / SITE_CONFIG).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("generator") == GENERATOR


def refuse_foreign(out: Path) -> None:
    """Checked again just before the swap: the folder may have changed while we wrote."""
    if not replaceable(out):
        raise SiteError(f"--out {out} exists and was not written by bard web; refusing to "
                        "replace it (choose a new folder, or remove it)")


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build_site(request: SiteRequest) -> SiteResult:
    """Write the site for one artifact (verified by loading it with the SDK first)."""
    out = request.out
    refuse_foreign(out)
    model = bard_sdk.load(request.model, device="cpu", threads=1)
    runtime = resolve_runtime(request.runtime, request.webgpu)
    with atomic_directory(out, replace=True, check=refuse_foreign) as staging:
        write_site_files(staging, model, runtime)
        os.chmod(staging, 0o755)
        size = folder_bytes(staging)
    return SiteResult(out, runtime, size)
