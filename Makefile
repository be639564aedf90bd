# `make demo` and `make test` each set up .venv first (a no-op once done).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nortune-setup

.PHONY: setup demo test bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk, not a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,eval,demo,dev,export,curate,report]"
	# llama.cpp's converter + Python bindings: a lean wheel built once (about 7-15 min on 2 cores),
	# cached in $${NORTUNE_CACHE:-~/.cache/nortune}/llama_cpp; seconds when cached (docs/export.md).
	$(PY) -m nortune.export.toolchain
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/nortune run configs/demo.yaml

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/train_throughput.py

clean-runs:
	rm -rf runs/demo
