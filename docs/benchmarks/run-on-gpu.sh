#!/usr/bin/env bash
# Every GPU figure of docs/performance.md in one run, on one GPU machine:
#   bash docs/benchmarks/run-on-gpu.sh OUT_DIR
# The device-augmentation parity test on the GPU, the data-path benchmark (data-wait share by
# decode workers; minutes), then the step benchmark (baseline against ours at each batch size;
# our mode compiles once per batch size, the longest part). Writes the JSON results, the logs
# and the updated docs/performance.md to OUT_DIR. Uses the `crisscross` command
# with the Ray pipeline where Ray is installed, else the Ray-free entry point and a DataLoader.
# Knobs (environment): BATCHES (32,64,128,256), STEPS (10), WINDOWS (3), WARMUP (5), COMPILE
# (--compile or --no-compile), FEED_WORKERS (2,4,8,12), FEED_BATCH (128); DEVICE=cpu rehearses
# the whole script on a machine without a GPU (use small BATCHES, STEPS and FEED_BATCH).
set -euo pipefail
out=${1:?usage: bash docs/benchmarks/run-on-gpu.sh OUT_DIR}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if python -c "import ray, mlflow" 2>/dev/null; then
  bench=(python -m crisscross bench) loader=ray
else
  bench=(python -m crisscross.bench.cli) loader=torch
fi
device=${DEVICE:-cuda}
if [ "$device" = cuda ]; then
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.csv" || true
fi

# the batched augmentation on the GPU gives the decode worker's sample (parametrised on cuda)
python -m pytest -q -p no:cacheprovider tests/datasets/test_samples.py -k device 2>&1 | tee "$out/parity.log"

"${bench[@]}" feed --device "$device" --loader "$loader" --workers "${FEED_WORKERS:-2,4,8,12}" \
  --batch "${FEED_BATCH:-128}" --workdir "${TMPDIR:-/tmp}/crisscross-feed" \
  --json "$out/feed-$device.json" --markdown docs/performance.md 2>&1 | tee "$out/feed.log"
cp docs/performance.md "$out/performance.md"  # kept if the step benchmark runs out of time

"${bench[@]}" train --device "$device" --batches "${BATCHES:-32,64,128,256}" "${COMPILE:---compile}" \
  --steps "${STEPS:-10}" --windows "${WINDOWS:-3}" --warmup "${WARMUP:-5}" --json "$out/step-$device.json" --markdown docs/performance.md 2>&1 | tee "$out/step.log"
cp docs/performance.md "$out/performance.md"
