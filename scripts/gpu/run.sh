#!/usr/bin/env bash
# On the GPU machine (carry .gpu from scripts/gpu/prepare.sh): install the carried wheels, then run the GPU and
# distributed checks; the figures go to $OUT/gpu.json (or runs/gpu/gpu.json), the log beside them. Under 8 minutes
# on one H200.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" DENSEKIT_DATA="$PWD/.gpu/data" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  PYTHONUNBUFFERED=1
python3 scripts/gpu/gpu_check.py --model .gpu/minilm-fp16 --out "$OUT" 2>&1 | tee "$OUT/gpu.log"
