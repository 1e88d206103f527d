#!/usr/bin/env bash
# The accelerator suite of the README's "Scaling out" section, for a GPU host with `.[cuda]`
# installed (not run in CI: no GPU there). Prints train-step MFU on Llama-3.2-1B and Llama-3.1-8B
# shapes and decode tokens/s against the HBM bound, then the AOT memory plan.
# Peaks default to an H100 SXM (989 bf16 TFLOP/s, 3350 GB/s); override for another device:
#   PEAK_TFLOPS=989 HBM_GBPS=4800 benchmarks/gpu_suite.sh      # e.g. an H200 (dense bf16, HBM3e)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEAK=${PEAK_TFLOPS:-989}
HBM=${HBM_GBPS:-3350}

"$PY" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
"$PY" -m benchmarks.accelerator --shapes llama-3.2-1b --batch 8 --seq 2048 \
  --peak-tflops "$PEAK" --hbm-gbps "$HBM" --decode-batch 64 --decode-new 256
"$PY" -m benchmarks.accelerator --shapes llama-3.1-8b --batch 4 --seq 4096 \
  --peak-tflops "$PEAK" --hbm-gbps "$HBM" --decode-batch 32 --decode-new 256
# the simulated plan runs on fake CPU devices whatever the host has
JAX_PLATFORMS=cpu "$PY" -m benchmarks.memory_plan
