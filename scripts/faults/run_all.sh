#!/usr/bin/env bash
# The long reliability checks (docs/reliability.md), figures as JSON under runs/faults/:
#   crash recovery (20 SIGKILLs per command, every rerun compared with an uninterrupted run), SIGKILL to torchrun
#   alone, the readers' fuzzing at 20x CI's examples, and the server's 10-minute soak (+ schemathesis at length and a
#   crowd of 2,000 slow / idle connections). Two to three hours on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export PYTHONPATH=$PWD HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
mkdir -p runs/faults
python scripts/faults/crash.py --kills 20 --seed "${SEED:-0}" --vanish 10 --output runs/faults/crash.json
python scripts/faults/crash.py --commands train-torchrun --kills 20 --seed "${SEED:-0}" \
    --output runs/faults/crash-torchrun.json
python scripts/faults/torchrun_orphans.py --inputs runs/faults/crash-work/inputs --output runs/faults/orphans.json
HYPOTHESIS_PROFILE=long python -m pytest -q -p no:cacheprovider tests/test_fuzz_readers.py \
    | tee runs/faults/fuzz_long.txt
python scripts/faults/soak.py --duration 600 --output runs/faults/soak.json
