#!/usr/bin/env bash
# The main job, from scratch: install densekit, then on SciFact mine BM25 + dense hard negatives for the
# train queries, train all-MiniLM-L6-v2 for three epochs, index the corpus with FAISS and evaluate on the
# test queries, printing BM25 vs zero-shot vs fine-tuned. Outputs land in runs/scifact/.
# SciFact is read from ../shared/data/beir/scifact (or $DENSEKIT_DATA/beir/scifact); with internet and
# no local copy it is downloaded from the BEIR mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${DENSEKIT_SETUP:-}" = skip ] || bash scripts/setup.sh  # skip: time the job alone (scripts/bench/performance.sh)
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
CONFIG=configs/scifact.yaml
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "zero-shot evaluation (its corpus embeddings are cached and reused by dense mining)"
densekit eval --model all-MiniLM-L6-v2 --data scifact --split test --output runs/scifact/eval-zeroshot \
  --cache-dir runs/cache
step "mining hard negatives (BM25 + dense) for the train queries"
densekit mine --config "$CONFIG"
step "training (InfoNCE, in-batch + hard negatives)"
densekit train --config "$CONFIG"
step "indexing the corpus with the fine-tuned model"
densekit index --config "$CONFIG"
step "evaluating the fine-tuned model through its index"
densekit eval --config "$CONFIG"
step "summary"
python scripts/scifact_summary.py --runs runs/scifact
echo "total: $(( $(date +%s) - start ))s"
