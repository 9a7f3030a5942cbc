#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite: unit tests and real-data integration tests.
# The tests read ../shared/data by default; set DENSEKIT_TEST_DATA to point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
ruff check densekit tests scripts
python -m pytest -q -p no:cacheprovider --durations=15 "$@"
