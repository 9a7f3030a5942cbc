#!/usr/bin/env bash
# Prepare what the GPU check carries to a machine that reaches no network (the device tool's 64 MiB working tree):
# all-MiniLM-L6-v2 in fp16, SciFact, and wheels of the Python packages densekit needs beyond the GPU image's own
# (faiss-cpu, bm25s, PyStemmer, datasets' small deps). Run it here once; then call the device with carry [".gpu"]
# and the command of scripts/gpu/run.sh. Everything lands in .gpu/ (git-ignored through .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data/beir
python - <<'PY'
from sentence_transformers import SentenceTransformer
from densekit.models import resolve_model
SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu").half().save(".gpu/minilm-fp16")
PY
cp -r ../shared/data/beir/scifact .gpu/data/beir/
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels faiss-cpu bm25s PyStemmer datasets dill multiprocess
du -sh .gpu
