"""Seconds per training step: ``densekit train`` against sentence-transformers' own Trainer, in one run.

Both train all-MiniLM-L6-v2 on the same rows (the main job's mined file: anchor, positive, 2 hard negatives), at
the same batch (32), sequence length (128), learning rate, seed and sampler (no duplicates), for ``--steps``
steps, each side in a fresh process: densekit's InfoNCE against ``MultipleNegativesRankingLoss`` (scale 20), and
densekit's ``--gradcache`` against ``CachedMultipleNegativesRankingLoss`` (mini-batches of 16). A callback times
every optimizer step; the median of the steps after the first is reported, and densekit / peer as a ratio (goal:
within 5%). Written to ``--out`` (JSON).

    python scripts/bench/train_step.py --data runs/scifact/mined.jsonl --steps 12 --out runs/bench/train_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[2]


class StepTimes(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def densekit_side(data: str, steps: int, gradcache: bool, out: str) -> list[float]:
    from densekit.training.config import TrainConfig
    from densekit.training.train import train

    timer = StepTimes()
    options = {"gradcache": True, "mini_batch_size": 16} if gradcache else {}
    train(TrainConfig.from_options(model="all-MiniLM-L6-v2", data=data, output=out, max_steps=steps, batch_size=32,
                                   learning_rate=3e-5, max_seq_length=128, save_steps=10_000, logging_steps=1000,
                                   num_negatives=2, **options), callbacks=[timer])
    return timer.times


def peer_side(data: str, steps: int, gradcache: bool, out: str) -> list[float]:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from densekit.data.training import read_training_records, to_hf_dataset
    from densekit.models import resolve_model

    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = 128
    dataset = to_hf_dataset(read_training_records(data), 2)
    loss = (CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=16) if gradcache
            else MultipleNegativesRankingLoss(model, scale=20.0))
    args = Args(output_dir=out, max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-5,
                warmup_steps=0.1, weight_decay=0.01, seed=42, batch_sampler=BatchSamplers.NO_DUPLICATES,
                save_steps=10_000, logging_steps=1000, report_to="none", dataloader_pin_memory=False)
    timer = StepTimes()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[timer]).train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/scifact/mined.jsonl")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default="runs/bench/train_step.json")
    parser.add_argument("--side", choices=("densekit", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--gradcache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--times-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in its own process
        with tempfile.TemporaryDirectory() as tmp:
            fn = densekit_side if args.side == "densekit" else peer_side
            times = fn(args.data, args.steps, args.gradcache, str(Path(tmp) / "model"))
        Path(args.times_out).write_text(json.dumps(times))
        return
    rows = {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    for gradcache in (False, True):
        name = "gradcache" if gradcache else "infonce"
        medians = {}
        for side in ("peer", "densekit"):
            with tempfile.NamedTemporaryFile(suffix=".json") as handle:
                subprocess.run([sys.executable, __file__, "--side", side, "--data", args.data, "--steps",
                                str(args.steps), "--times-out", handle.name, *(["--gradcache"] if gradcache else [])],
                               check=True, env=env, cwd=REPO)
                times = json.loads(Path(handle.name).read_text())
            medians[side] = statistics.median(times[1:])
        rows[name] = {"peer_seconds_per_step": round(medians["peer"], 3),
                      "densekit_seconds_per_step": round(medians["densekit"], 3),
                      "ratio_densekit_to_peer": round(medians["densekit"] / medians["peer"], 3)}
        print(name, rows[name], flush=True)
    result = {"steps": args.steps, "batch": 32, "max_seq_length": 128, "load_average": round(os.getloadavg()[0], 2),
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
