"""`bard web` writes a complete, pinned, self-contained site and never clobbers a folder."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from bard.web.runtime import BUILDS, CDN_BASE, ORT_VERSION, PINNED_INTEGRITY, sri_sha384
from bard.web.site import SITE_CONFIG, SiteRequest, build_site, script_json

from tests.conftest import bard_cli
from tests.web.conftest import ORT_PACKAGE, start_site_server, stop_process

needs_npm_runtime = pytest.mark.skipif(
    not (ORT_PACKAGE / "package.json").is_file(),
    reason="no onnxruntime-web in web/node_modules (make web-runtime installs it with npm)")


@needs_npm_runtime
def test_pinned_cdn_hashes_are_those_of_the_npm_release() -> None:
    package = json.loads((ORT_PACKAGE / "package.json").read_text("utf-8"))
    assert package["version"] == ORT_VERSION
    for name, integrity in PINNED_INTEGRITY.items():
        assert sri_sha384(ORT_PACKAGE / "dist" / name) == integrity, name
    assert set(PINNED_INTEGRITY) == {n for files in BUILDS.values() for n in files}


def test_cdn_site_names_every_runtime_file_with_its_hash(tiny_artifact: Path,
                                                         tmp_path: Path) -> None:
    result = build_site(SiteRequest(out=tmp_path / "site", model=tiny_artifact))
    site = result.out
    config = json.loads((site / SITE_CONFIG).read_text("utf-8"))
    assert config["runtime"]["base"] == CDN_BASE
    assert config["runtime"]["integrity"] == PINNED_INTEGRITY
    assert not (site / "ort").exists()
    page = (site / "index.html").read_text("utf-8")
    importmap = page.split('<script type="importmap">')[1].split("</script>")[0]
    pinned = json.loads(importmap)["integrity"]
    assert pinned[CDN_BASE + "ort.wasm.min.mjs"] == PINNED_INTEGRITY["ort.wasm.min.mjs"]
    # The artifact travels unchanged: the page checks model.onnx against the manifest's sha256.
    for name in ("manifest.json", "model.onnx"):
        assert (site / "model" / name).read_bytes() == (tiny_artifact / name).read_bytes()
    assert config["manifest"] == "model/manifest.json" and config["model"] == "model/model.onnx"
    assert not list(tmp_path.glob(".site.*")), "a staging folder was left behind"


@needs_npm_runtime
def test_local_runtime_is_copied_and_served_cross_origin_isolated(tiny_artifact: Path,
                                                                  tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = bard_cli("web", "--model", str(tiny_artifact), "--out", str(site), "--runtime",
                      str(ORT_PACKAGE.parent.parent), "--no-webgpu", check=True)
    assert f"onnxruntime-web {ORT_VERSION} copied from" in result.stdout
    assert sorted(p.name for p in (site / "ort").iterdir()) == sorted(BUILDS["wasm"])
    server = start_site_server(site)
    try:
        response = httpx.get(server.url + "ort/ort-wasm-simd-threaded.wasm", timeout=10)
        page = httpx.get(server.url, timeout=10)
    finally:
        stop_process(server.process)
    assert response.headers["content-type"] == "application/wasm"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"


def test_a_folder_bard_did_not_write_is_never_replaced(tiny_artifact: Path,
                                                       tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = bard_cli("web", "--model", str(tiny_artifact), "--out", str(mine))
    assert result.returncode == 2
    assert result.stderr.startswith("bard: error: --out") and "refusing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # A site bard web wrote is replaced whole; so is an empty folder.
    site = tmp_path / "site"
    build_site(SiteRequest(out=site, model=tiny_artifact))
    (site / "stale.txt").write_text("from an older build")
    build_site(SiteRequest(out=site, model=tiny_artifact))
    assert not (site / "stale.txt").exists() and (site / "index.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    build_site(SiteRequest(out=empty, model=tiny_artifact))
    assert (empty / SITE_CONFIG).is_file()


def test_bad_input_is_one_line_and_exit_code_2(tiny_artifact: Path, tmp_path: Path) -> None:
    cases = [
        (["--runtime", str(tmp_path)], "no onnxruntime-web package there"),
        (["--model", str(tmp_path / "nowhere")], "artifact directory not found"),
        (["--port", "70000", "--serve"], "--port must be in [0, 65535]"),
    ]
    for args, message in cases:
        model = [] if "--model" in args else ["--model", str(tiny_artifact)]
        result = bard_cli("web", "--out", str(tmp_path / "out"), *model, *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists()


def test_json_in_a_script_element_cannot_close_it() -> None:
    text = script_json({"x": "</script><!--<script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"x": "</script><!--<script>&"}
