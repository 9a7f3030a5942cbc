#!/usr/bin/env bash
# docs/performance.md's figures in one go, each benchmark densekit against the peer in the same run (JSON under
# runs/bench/): encoding per backend, a training step, serving, a profile, and the main job from a fresh clone with
# empty caches (install excluded). Run on a quiet machine: the ratios are single runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export DENSEKIT_DATA=${DENSEKIT_DATA:-$(cd .. && pwd)/shared/data}  # the clone lives elsewhere
mkdir -p runs/bench
clone=$(mktemp -d)/densekit
git clone -q . "$clone"
ln -s "$PWD/.venv" "$clone/.venv"
(cd "$clone" && PYTHONPATH="$clone" DENSEKIT_SETUP=skip bash scripts/scifact.sh) | tee runs/bench/main_job.log
python - "$clone" <<'PY'
import json, re, sys
from pathlib import Path
log = Path("runs/bench/main_job.log").read_text()
marks = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^== (.+?) \((\d+)s\)$", log, re.M)]
total = int(re.search(r"^total: (\d+)s", log, re.M).group(1))
stages = {name: end - start for (name, start), (_, end) in zip(marks, [*marks[1:], ("end", total)])}
metrics = json.loads((Path(sys.argv[1]) / "runs/scifact/eval-finetuned/metrics.json").read_text())
out = {"total_seconds": total, "stages_seconds": stages, "ndcg_at_10": metrics["ndcg_at_10"]}
Path("runs/bench/main_job.json").write_text(json.dumps(out, indent=2))
print(json.dumps(out, indent=2))
PY
python scripts/bench/encoding.py --docs 1000 --out runs/bench/encoding.json
python scripts/bench/train_step.py --data "$clone/runs/scifact/mined.jsonl" --steps 12 --out runs/bench/train_step.json
python scripts/bench/serving.py --index "$clone/runs/scifact/index" --out runs/bench/serving.json
python scripts/bench/profile_step.py --mined "$clone/runs/scifact/mined.jsonl" --out runs/bench/profile.json
