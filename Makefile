# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
BARD := $(VENV)/bin/bard
# torch first: its CPU wheel lies on this machine's disk; a plain `torch` pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install browser demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
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

demo: install
	@echo "== the shipped model (no training needed) =="
	$(BARD) generate "ROMEO:" -n 300 --temperature 0.8 --seed 1
	@echo "== train a tiny model on the bundled corpus, export it, generate from it =="
	rm -rf runs/demo runs/demo-artifact
	$(BARD) train --preset tiny --out runs/demo
	$(BARD) export runs/demo --out runs/demo-artifact --quantize int8
	$(BARD) generate "ROMEO:" --model runs/demo-artifact -n 200 --seed 1

test: install browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: install
	$(BARD) bench

clean:
	rm -rf runs build dist *.egg-info .pytest_cache .ruff_cache
