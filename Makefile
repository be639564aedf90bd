# `make demo` and `make test` each set up .venv first (a no-op once done).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nortune-setup

.PHONY: setup browser demo test bench clean-runs

# The portable llama.cpp build is defined in toolchain.py: a change there must reinstall it.
$(STAMP): pyproject.toml src/nortune/export/toolchain.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk, not a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,eval,demo,dev,export,curate,report]"
	# llama.cpp's converter + Python bindings: a lean wheel built once (about 7-15 min on 2 cores),
	# cached in $${NORTUNE_CACHE:-~/.cache/nortune}/llama_cpp; seconds when cached (docs/export.md).
	$(PY) -m nortune.export.toolchain
	touch $(STAMP)

# The report's browser check (and its test) need Debian's chromium + chromium-driver. A missing
# browser is an error, never a silent skip; NORTUNE_BROWSER_CHECK=off is the explicit opt-out.
browser:
	@if [ "$${NORTUNE_BROWSER_CHECK:-on}" != off ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium + chromium-driver for the report's browser check"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; \
	  else \
	    echo "nortune: the report's browser check needs chromium + chromedriver: sudo apt-get install chromium chromium-driver (or set NORTUNE_BROWSER_CHECK=off)" >&2; exit 2; \
	  fi; \
	fi

setup: $(STAMP) browser

demo: setup
	$(VENV)/bin/nortune run configs/demo.yaml

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/train_throughput.py

clean-runs:
	rm -rf runs/demo
