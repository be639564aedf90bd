# `make demo` and `make test` each set up .venv first (a no-op once done).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nortune-setup

.PHONY: setup system-packages test-packages demo test test-fast bench clean-runs

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

# Debian packages: the report's browser check needs chromium + chromedriver (make demo and the tests);
# the portability test runs llama.cpp under QEMU as an AVX2-only CPU and reads its machine code.
# Installed as root, else an error with the command; never a silent skip (scripts/system_packages.sh).
system-packages:
	scripts/system_packages.sh chromium=chromium chromedriver=chromium-driver

test-packages:
	scripts/system_packages.sh qemu-x86_64=qemu-user objdump=binutils

setup: $(STAMP) system-packages

demo: setup
	$(VENV)/bin/nortune run configs/demo.yaml

# The whole suite (what CI runs) and the fast lane (no training, conversion, llama.cpp, browser or
# rank launch; it needs no Debian packages): tests/README.md.
# Each lane leaves its JUnit file in .cache/; `python scripts/test_lanes.py` writes their figures into the README.
test: setup test-packages
	$(PY) -m pytest -q --durations=15 --junitxml=.cache/junit-whole.xml

test-fast: $(STAMP)
	$(PY) -m pytest -q --fast -n 2 --durations=15 --junitxml=.cache/junit-fast.xml

bench: setup
	$(PY) benchmarks/train_throughput.py

clean-runs:
	rm -rf runs/demo
