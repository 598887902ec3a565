#!/usr/bin/env bash
# The unit and model tests twice on a CUDA machine, side by side in one run: once with the GPU hidden
# (CUDA_VISIBLE_DEVICES=) and once with it visible. A test that fails only with CUDA visible is a device
# bug (tensors on two devices, .numpy() of a CUDA tensor); failures in both runs are the machine's
# (a package it lacks); for the policy tests carry the model cache benchmarks/device_model_cache.py writes
# (PLURALIGN_MODEL_CACHE). Prints both summaries and the two differences; logs under $OUT (default
# runs/cuda-check). Usage: bash benchmarks/cuda_side_by_side.sh [TEST PATHS...] (default: tests/models tests/unit)
set -u
OUT=${OUT:-runs/cuda-check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}
SEL=("$@"); [ ${#SEL[@]} -gt 0 ] || SEL=(tests/models tests/unit)
ARGS=(-q -n "${WORKERS:-6}" -p no:randomly -p no:cacheprovider --continue-on-collection-errors -rfE)
# a test waiting on a child process that cannot start there (a package missing) would hold its worker
# until LIMIT_S and lose both summaries: pytest-timeout, where installed, fails it after TEST_TIMEOUT_S
$PY -c "import pytest_timeout" 2>/dev/null && ARGS+=(--timeout "${TEST_TIMEOUT_S:-60}")
$PY -c "import torch; from pluralign.device import default_device; print(torch.__version__, 'default_device', default_device())"
(CUDA_VISIBLE_DEVICES= timeout "${LIMIT_S:-400}" $PY -m pytest "${ARGS[@]}" "${SEL[@]}" > "$OUT/cpu.log" 2>&1) &
(timeout "${LIMIT_S:-400}" $PY -m pytest "${ARGS[@]}" "${SEL[@]}" > "$OUT/gpu.log" 2>&1) &
wait
for run in cpu gpu; do
  echo "== $run: $(tail -1 "$OUT/$run.log")"
  grep -E "^(FAILED|ERROR) " "$OUT/$run.log" | sed 's/ - .*//' | sort > "$OUT/$run.failed"
done
echo "== failing only with CUDA visible"; comm -13 "$OUT/cpu.failed" "$OUT/gpu.failed"
echo "== failing only with CUDA hidden"; comm -23 "$OUT/cpu.failed" "$OUT/gpu.failed"
