#!/usr/bin/env bash
# The dynamic training modes on SciFact, each trained with the main job's one-epoch recipe (1 epoch, batch 32,
# lr 3e-5, seq 128) from the same dense negatives (ranks 10-50) as the static "dense" row of scripts/ablation_mining.py, then evaluated
# on the test queries (nDCG@10 + AUC, documents at seq 256). Every stage is skipped when its output exists.
#   bash scripts/dynamic_modes.sh [OUT]     (default runs/dynamic; needs runs/ablation/dense/mined.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
OUT=${1:-runs/dynamic}
MINED=runs/ablation/dense/mined.jsonl
TRAIN=(--epochs 1 --batch-size 32 --learning-rate 3e-5 --max-seq-length 128 --save-steps 10 --cache-dir runs/cache)
EVAL=(--data scifact --split test --auc --cache-dir runs/cache)
mkdir -p "$OUT"
if [ ! -f "$MINED" ]; then
  densekit mine --data scifact --split train --num-negatives 2 --window 10 50 --cache-dir runs/cache \
    --retriever dense --output "$MINED"
fi
timed() { local name=$1; shift; local t0; t0=$(date +%s); "$@" >>"$OUT/$name.log" 2>&1
  echo "{\"stage\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >>"$OUT/timings.jsonl"; }

# STAR: static hard negatives + in-batch random negatives, pairwise loss, relevant in-batch documents masked
[ -d "$OUT/star" ] || timed star-train densekit train --mode star --beir scifact --data "$MINED" --output "$OUT/star" "${TRAIN[@]}"
[ -f "$OUT/star-eval/metrics.json" ] || timed star-eval densekit eval --model "$OUT/star" --max-seq-length 256 "${EVAL[@]}" --output "$OUT/star-eval"
# ADORE after STAR: the STAR model's document index is fixed, only the query encoder trains
[ -d "$OUT/star-adore" ] || timed adore-train densekit train --mode adore --beir scifact --model "$OUT/star" \
  --output "$OUT/star-adore" --refresh-max-seq-length 256 "${TRAIN[@]}"
[ -f "$OUT/star-adore-eval/metrics.json" ] || timed adore-eval densekit eval --index "$OUT/star-adore-index" --model "$OUT/star-adore" "${EVAL[@]}" --output "$OUT/star-adore-eval"
# ANCE: the dense negatives re-mined in the background every 6 steps (a quarter of the corpus re-encoded each time)
[ -d "$OUT/ance" ] || timed ance-train densekit train --mode ance --beir scifact --data "$MINED" --output "$OUT/ance" \
  --refresh-steps 6 --refresh-fraction 0.25 "${TRAIN[@]}"
[ -f "$OUT/ance-eval/metrics.json" ] || timed ance-eval densekit eval --model "$OUT/ance" --max-seq-length 256 "${EVAL[@]}" --output "$OUT/ance-eval"
echo done
