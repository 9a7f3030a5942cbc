"""SIGKILL to ``torchrun`` alone (not its process tree): do its workers stop, or train on and write checkpoints?

Starts a 2-process CPU ``torchrun ... -m densekit.cli train`` on a tiny model, waits for its first checkpoint,
SIGKILLs the launcher only and reports which workers are still alive 5 s later (then kills any survivor). Before
densekit.lifecycle both survived (they run in sessions of their own); now both die with the launcher.

    python scripts/faults/torchrun_orphans.py --inputs runs/faults/crash-work/inputs --output runs/faults/orphans.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="the inputs folder scripts/faults/crash.py builds")
    parser.add_argument("--work", default="runs/faults/orphans-work")
    parser.add_argument("--output", default="runs/faults/orphans.json")
    args = parser.parse_args(argv)
    inputs, work = Path(args.inputs), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "densekit.cli", "train", "--model", str(inputs / "tiny"), "--data", str(inputs / "mined.jsonl"),
               "--output", str(work / "model"), "--max-steps", "400", "--batch-size", "4", "--save-steps", "5",
               "--report-to", "none"]
    with open(work / "log.txt", "w") as log:
        launcher = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list((work / "model.checkpoints").glob("checkpoint-*")):
        time.sleep(0.2)
    workers = [p for p in psutil.Process(launcher.pid).children(recursive=True)]
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    time.sleep(5)
    alive = [p.pid for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    checkpoints_after = sorted(p.name for p in (work / "model.checkpoints").glob("checkpoint-*"))
    for process in workers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    result = {"workers": len(workers), "alive_5s_after_launcher_sigkill": len(alive),
              "checkpoints_seen": checkpoints_after}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0 if not alive else 1


if __name__ == "__main__":
    sys.exit(main())
