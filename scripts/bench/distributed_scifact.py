"""SciFact: what two processes buy, and what cross-device negatives are worth (docs/distributed.md).

Trains all-MiniLM-L6-v2 on one mined file four ways, each with the main job's one-epoch recipe (1 epoch, lr 3e-5,
seq 128), and evaluates each on SciFact test (documents at seq 256):

* ``1proc-B``: one process, batch B (the main job's recipe at one epoch);
* ``2proc-B-gather``: two processes (torchrun, gloo), B each, every query scored against both devices'
  candidates (global contrastive batch 2B);
* ``2proc-B-local``: the same without gathering (each query against its own device's B);
* ``1proc-gradcache-2B``: one process, GradCache, batch 2B (the same contrastive batch as 2proc-B-gather).

Writes ``OUT/distributed.json``: nDCG@10, samples/s per process, the share of the step spent in all_gather
(profiled steps), the peak memory of every process. Each stage is skipped when its output exists.

    python scripts/bench/distributed_scifact.py --mined runs/scifact/mined.jsonl --out runs/bench/distributed
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "scripts" / "bench" / "train_probe.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], log: Path, env: dict) -> float:
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mined", required=True)
    parser.add_argument("--out", default="runs/bench/distributed")
    parser.add_argument("--data", default="scifact")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // 2)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    train = ["--model", "all-MiniLM-L6-v2", "--data", args.mined, "--epochs", "1", "--learning-rate", "3e-5",
             "--max-seq-length", "128", "--save-steps", "1000", "--seed", str(args.seed), "--logging-steps", "1"]
    b = args.batch
    rows = {
        "1proc-B": ([], ["--batch-size", str(b)], 1),
        "2proc-B-gather": ([], ["--batch-size", str(b)], 2),
        "2proc-B-local": ([], ["--batch-size", str(b), "--no-gather-across-devices"], 2),
        "1proc-gradcache-2B": ([], ["--batch-size", str(2 * b), "--gradcache", "--mini-batch-size", "16"], 1),
    }
    results = {}
    for name, (_, flags, procs) in rows.items():
        model, probe = out / name, out / f"{name}.probe.json"
        launcher = [sys.executable]
        if procs > 1:
            launcher += ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(procs),
                         "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
        row_env = {**env, "OMP_NUM_THREADS": str(threads if procs > 1 else 2 * threads)}
        if not probe.exists():
            seconds = run([*launcher, str(PROBE), "--probe-out", str(probe), *train, *flags, "--output", str(model)],
                          out / f"{name}.train.log", row_env)
            print(f"{name}: trained in {seconds} s", flush=True)
        metrics = out / f"{name}-eval" / "metrics.json"
        if not metrics.exists():
            run([sys.executable, "-m", "densekit.cli", "eval", "--model", str(model), "--data", args.data,
                 "--split", "test", "--max-seq-length", "256", "--cache-dir", "none", "--output",
                 str(out / f"{name}-eval")], out / f"{name}.eval.log", env)
        results[name] = {**json.loads(probe.read_text()),
                         "ndcg_at_10": json.loads(metrics.read_text())["ndcg_at_10"], "processes": procs,
                         "load_average_after": round(os.getloadavg()[0], 2)}
        print(name, json.dumps(results[name]), flush=True)
    summary = {"machine": {"cpus": os.cpu_count(), "threads_per_process": threads}, "batch": b, "rows": results}
    (out / "distributed.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
