"""The shipped model: loads with no path, reproduces its recorded loss, installs without torch."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

import bard_sdk
import pytest

from tests.conftest import ROOT, bard_cli


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tinyshakespeare.txt"
    blob = (ROOT / "training" / "corpus" / "tinyshakespeare.txt.gz").read_bytes()
    path.write_bytes(gzip.decompress(blob))
    return path


def test_bundled_model_loads_without_a_path() -> None:
    model = bard_sdk.load()
    assert model.manifest.name == "shakespeare"
    assert set(model.manifest.variants()) == {"fp32", "int8"}
    assert model.manifest.raw["model"]["parameters"] <= 6_000_000
    text = model.generate("ROMEO:", 200, temperature=0.8, seed=1)
    assert len(text) == 200


def test_shipped_files_are_small_enough() -> None:
    size = sum(p.stat().st_size for p in bard_sdk.bundled_model_path().iterdir())
    assert size < 25_000_000


def test_recorded_validation_loss_matches_a_fresh_eval(corpus_file: Path) -> None:
    recorded = bard_sdk.load().manifest.provenance
    result = bard_cli("eval", str(corpus_file), "--split", "val", "--json", check=True,
                      timeout=600)
    fresh = json.loads(result.stdout)
    assert fresh["nats_per_char"] == pytest.approx(recorded["val_loss_nats"], abs=1e-3)
    assert fresh["characters"] == recorded["split"]["val_chars"] - 1
    assert recorded["val_loss_nats"] <= 1.42  # the target; nanoGPT's character baseline: 1.4697
    assert abs(recorded["val_loss_nats_int8"] - recorded["val_loss_nats"]) <= 0.01


def test_module_level_generate_caches_the_model() -> None:
    first = bard_sdk.generate("ROMEO:", 20, seed=1)
    cached = list(bard_sdk._cache.values())
    second = bard_sdk.generate("ROMEO:", 20, seed=1)
    assert first == second and len(first) == 20
    assert list(bard_sdk._cache.values()) == cached and len(cached) == 1


def test_base_install_generates_without_torch(tmp_path: Path) -> None:
    """`pip install .` with no extras: no torch, bundled model works, `bard train` explains."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True,
                   timeout=900, env=clean_env, cwd=tmp_path)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None, "
         "u.find_spec('onnx') is None)"], capture_output=True, text=True, check=True,
        env=clean_env, cwd=tmp_path)
    assert probe.stdout.split() == ["True", "True"], "a base install must not pull torch or onnx"
    bard = env_dir / "bin" / "bard"
    generated = subprocess.run([str(bard), "generate", "ROMEO:", "-n", "80", "--seed", "2"],
                               capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("ROMEO:") and len(generated.stdout) > 80
    api = subprocess.run([str(python), "-c", "import bard_sdk; print(len(bard_sdk.generate("
                          "'ROMEO:', 50, seed=1)))"], capture_output=True, text=True,
                         env=clean_env, cwd=tmp_path)
    assert api.stdout.strip() == "50", api.stderr
    refused = subprocess.run([str(bard), "train", "--out", "x"], capture_output=True, text=True,
                             env=clean_env, cwd=tmp_path)
    assert refused.returncode == 2 and "pip install 'bard[train]'" in refused.stderr
    assert sys.executable != str(python)
    check_serve_extra(python, bard, clean_env, tmp_path)


def check_serve_extra(python: Path, bard: Path, env: dict[str, str], cwd: Path) -> None:
    """`bard serve` names its extra; after `pip install '.[serve]'` it serves, still no torch."""
    refused = subprocess.run([str(bard), "serve", "--port", "0"], capture_output=True,
                             text=True, env=env, cwd=cwd)
    assert refused.returncode == 2 and "pip install 'bard[serve]'" in refused.stderr
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[serve]"],
                   check=True, timeout=900, env=env, cwd=cwd)
    server = subprocess.Popen([str(bard), "serve", "--port", "0"], stderr=subprocess.PIPE,
                              text=True, env=env, cwd=cwd)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        url = line.split(" at ", 1)[1].split()[0]
        body = json.dumps({"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 40,
                           "seed": 3}).encode()
        request = urllib.request.Request(url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert reply["choices"][0]["text"] == bard_sdk.generate("ROMEO:", 40, seed=3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], capture_output=True,
                           text=True, env=env, cwd=cwd)
    assert probe.stdout.strip() == "True"
    no_ray = subprocess.run([str(bard), "serve", "--ray", "--port", "0"], capture_output=True,
                            text=True, env=env, cwd=cwd)
    assert no_ray.returncode == 2 and "pip install 'bard[ray]'" in no_ray.stderr
