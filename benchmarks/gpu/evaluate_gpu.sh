#!/usr/bin/env bash
# The GPU evaluation benchmark (benchmarks/evaluate_gpu.py) on a lent GPU machine, sized to finish
# in about 8 minutes with the installs. docs/evaluate-gpu.md says what it measures.
#
#   benchmarks/gpu/evaluate_gpu.sh prepare   # HERE, once, in the repo root (pip and .venv work here)
#       writes .gpu/ (git-ignored, about 20 MB): the model's config + tokenizer, packed, and the wheels
#       the GPU machine's image lacks (lm-eval 0.4.13 as pinned here, datasets, pydantic, ...),
#       at the versions installed in .venv, for its Python 3.12.
#   benchmarks/gpu/evaluate_gpu.sh           # THERE, in the repo root, carrying .gpu; $OUT set
#       installs those wheels, tries vLLM, runs the benchmark; log, JSON line and versions in $OUT.
#
# vLLM cannot travel (its wheel and the torch build it pins are GBs; a call carries 64 MiB): where
# the machine has no network and no vllm, the benchmark runs nortune and hf and reports the vllm
# side as skipped, "vllm is not installed". Where pip can reach an index, VLLM_SPEC (lm-eval's own
# pin by default) is installed first, within VLLM_INSTALL_S seconds.
#
# Settings (environment): LIMIT (items per task, 20), ROUNDS (1), SIDES (nortune,hf,vllm),
# MODEL (default: the packed shape with seeded random weights), BENCH_S (the benchmark's limit,
# 450 s), SIDE_S (one side's, 200 s: vLLM compiles and captures CUDA graphs at load), DEVICE (cuda;
# cpu for a dry run here), EXTRA (more benchmark options), SITE (where the wheels go, /tmp/site).
# With the installs it ends within about 8 minutes: give the device call a timeout of 540 s.
set -uo pipefail
cd "$(dirname "$0")/../.."

LM_EVAL_VERSION=0.4.13
VLLM_SPEC=${VLLM_SPEC:-"vllm>=0.18"}     # lm-eval 0.4.13's extra: lm_eval[vllm] requires vllm>=0.18
WHEELS=(lm_eval datasets dill multiprocess pydantic pydantic_core annotated-types typing-inspection)

if [ "${1:-}" = prepare ]; then
    set -e
    PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=/work/main/.venv/bin/python
    rm -rf .gpu && mkdir -p .gpu/whl
    PYTHONPATH=src "$PY" benchmarks/gpu_memory.py --model "${MODEL:-embedded:gemma3-270m}" --write-shape .gpu/shape
    tar -czf .gpu/shape.tar.gz -C .gpu shape && rm -rf .gpu/shape
    for name in "${WHEELS[@]}"; do
        pinned="$name==$("$PY" -c "from importlib.metadata import version; print(version('$name'))")"
        [ "$name" = lm_eval ] && pinned="lm_eval==$LM_EVAL_VERSION"
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .gpu/whl "$pinned"
    done
    du -sh .gpu; ls .gpu/whl
    exit 0
fi

OUT=${OUT:-/tmp/evaluate-gpu-out}; mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}; mkdir -p "$SITE"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/steps.txt"; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

log "install: carried wheels (lm-eval $LM_EVAL_VERSION and what the image lacks)"
if ls .gpu/whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl \
        || { log "wheel install failed"; exit 1; }
else
    timeout 180 python3 -m pip install -q --retries 0 --timeout 15 --target "$SITE" "lm_eval[hf]==$LM_EVAL_VERSION" pydantic \
        || { log "no .gpu/whl and no index reachable: run 'benchmarks/gpu/evaluate_gpu.sh prepare' here first"; exit 1; }
fi
export PYTHONPATH="$PWD/src:$SITE" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if ! python3 -c "import vllm" 2> /dev/null; then
    log "install: $VLLM_SPEC (only where an index is reachable)"
    timeout "${VLLM_INSTALL_S:-240}" python3 -m pip install -q --retries 0 --timeout 15 --target "$SITE" "$VLLM_SPEC" \
        >> "$OUT/steps.txt" 2>&1 || log "vllm not installed: the benchmark reports the vllm side as skipped"
fi
python3 - > "$OUT/versions.txt" 2>&1 << 'EOF'
from importlib.metadata import version, PackageNotFoundError
for name in ("torch", "transformers", "lm_eval", "datasets", "vllm"):
    try:
        print(name, version(name))
    except PackageNotFoundError:
        print(name, "not installed")
EOF
cat "$OUT/versions.txt"

MODEL_ARGS=(--model "${MODEL:-}")
if [ -z "${MODEL:-}" ]; then
    mkdir -p /tmp/shape && tar -xzf .gpu/shape.tar.gz -C /tmp || { log "no .gpu/shape.tar.gz: run prepare here first"; exit 1; }
    MODEL_ARGS=(--model /tmp/shape --random-weights)
fi
log "benchmark: limit ${LIMIT:-20}, rounds ${ROUNDS:-1}, sides ${SIDES:-nortune,hf,vllm}"
# shellcheck disable=SC2086  # EXTRA is a list of options
timeout "${BENCH_S:-450}" python3 benchmarks/evaluate_gpu.py --device "${DEVICE:-cuda}" "${MODEL_ARGS[@]}" \
    --limit "${LIMIT:-20}" --rounds "${ROUNDS:-1}" --sides "${SIDES:-nortune,hf,vllm}" --side-timeout "${SIDE_S:-200}" \
    ${EXTRA:-} > "$OUT/evaluate_gpu.log" 2> "$OUT/evaluate_gpu.stderr"
status=$?
tail -n 1 "$OUT/evaluate_gpu.log" > "$OUT/evaluate_gpu.json"
grep -v '^{' "$OUT/evaluate_gpu.log" | tail -n 20
tail -c 3000 "$OUT/evaluate_gpu.stderr"
log "done (exit $status)"
exit $status
