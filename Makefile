# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
BARD := $(VENV)/bin/bard
# torch first: its CPU wheel lies on this machine's disk; a plain `torch` pulls a CUDA build.
TORCH ?= torch==2.13.0
# `make gpu-check`: its own venv, torch's CUDA build (PyPI's default torch 2.13 is built for
# CUDA 13, as onnxruntime-gpu 1.31 is), bard with the gpu extra; results land in GPU_OUT.
GPU_VENV ?= .venv-gpu
GPU_PY := $(GPU_VENV)/bin/python
TORCH_GPU ?= torch==2.13.0
GPU_OUT ?= gpu-check-results

.PHONY: install browser web-runtime demo test lint bench clean gpu-check

# onnxruntime and onnxruntime-gpu are one module under two names (README "Install"): drop
# whichever an older install left, so the install below brings exactly the one bard asks for.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --quiet --yes onnxruntime onnxruntime-gpu
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[train,serve,ray,dev]'
	touch $@

install: $(VENV)/.installed

# The playground test drives a real headless browser: Debian's chromium package, where apt-get
# can install it (as root); elsewhere that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium is not installed; the playground browser test will be skipped"

# onnxruntime-web, pinned by web/package-lock.json, for the browser tests and for offline sites
# (`bard web --runtime web`); without npm the browser tests are skipped and say why.
web-runtime: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && touch node_modules/.installed; \
	else echo "note: npm is not installed; the bard web browser tests will be skipped"; fi

demo: install
	@echo "== the shipped model (no training needed) =="
	$(BARD) generate "ROMEO:" -n 300 --temperature 0.8 --seed 1
	@echo "== train a tiny model on the bundled corpus, export it, generate from it =="
	rm -rf runs/demo runs/demo-artifact
	$(BARD) train --preset tiny --out runs/demo
	$(BARD) export runs/demo --out runs/demo-artifact --quantize int8
	$(BARD) generate "ROMEO:" --model runs/demo-artifact -n 200 --seed 1

test: install browser web-runtime
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: install
	$(BARD) bench

$(GPU_VENV)/.installed: pyproject.toml
	python3 -m venv $(GPU_VENV)
	$(GPU_PY) -m pip install --quiet --upgrade pip
	$(GPU_PY) -m pip uninstall --quiet --quiet --yes onnxruntime onnxruntime-gpu
	$(GPU_PY) -m pip install --quiet $(TORCH_GPU) -e '.[train,dev,gpu]'
	touch $@

# On a machine with an NVIDIA GPU (driver only: CUDA and cuDNN come from pip): the tests
# marked `cuda` (BARD_REQUIRE_CUDA turns their skip into a failure), then the CUDA numbers
# for BENCHMARKS.md into $(GPU_OUT)/bench.json.
gpu-check: $(GPU_VENV)/.installed
	$(GPU_PY) -c "import sys, torch; torch.version.cuda or sys.exit('bard: error: torch ' \
	    + torch.__version__ + ' is a CPU build; set TORCH_GPU to a CUDA build of torch')"
	BARD_REQUIRE_CUDA=1 $(GPU_VENV)/bin/pytest -q -m cuda tests/cuda
	$(GPU_VENV)/bin/bard bench --device cuda --out $(GPU_OUT)

clean:
	rm -rf runs build dist *.egg-info .pytest_cache .ruff_cache
