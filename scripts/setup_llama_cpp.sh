#!/usr/bin/env bash
# Set up llama.cpp's tooling for `nortune export` in the project's .venv (what `make setup` runs):
# the converter from llama-cpp-python's source distribution and a lean llama-cpp-python wheel,
# built once (about 7-15 min on 2 cores) and cached in ${NORTUNE_CACHE:-~/.cache/nortune}/llama_cpp.
# Pass --check to only report. See docs/export.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-.venv/bin/python}" -m nortune.export.toolchain "$@"
