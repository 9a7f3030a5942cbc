"""``densekit train`` with measurements, for the distributed benchmark: run it as densekit's own command,
under ``torchrun`` or alone, with the same flags plus ``--probe-out FILE``.

    torchrun --standalone --nproc_per_node 2 scripts/bench/train_probe.py --probe-out probe.json \\
        --model all-MiniLM-L6-v2 --data mined.jsonl --output out ...

Rank 0 writes FILE (JSON): the training time and samples per second per process, the peak resident memory of
every process, and the share of the step time spent in cross-device gathering (the forward all_gather and the
all_to_all of its backward).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback


class Probe(TrainerCallback):
    """Step times, and the time spent inside the collectives that cross-device gathering issues: the all_gather of
    the forward and the all_to_all of its backward (timed by wrapping torch.distributed's functions in this
    process only; on a CPU, gloo's collectives block, so their wall time is what the step waits for them)."""

    def __init__(self) -> None:
        self.step_start = 0.0
        self.step_seconds = 0.0
        self.collective_seconds = 0.0
        self._wrap("all_gather")
        self._wrap("all_to_all")

    def _wrap(self, name: str) -> None:
        import torch.distributed as dist

        original = getattr(dist, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.collective_seconds += time.perf_counter() - start

        setattr(dist, name, timed)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds += time.perf_counter() - self.step_start

    def summary(self, world: int) -> dict:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peaks = [peak_kib]
        if world > 1:
            import torch.distributed as dist

            peaks = [None] * world
            dist.all_gather_object(peaks, peak_kib)
        share = self.collective_seconds / self.step_seconds if self.step_seconds else None
        return {"step_seconds": round(self.step_seconds, 3), "gather_seconds": round(self.collective_seconds, 4),
                "gather_share": share and round(share, 4),
                "peak_rss_mib_by_rank": [round(p / 1024, 1) for p in peaks]}


def main() -> None:
    argv = sys.argv[1:]
    out = Path(argv[argv.index("--probe-out") + 1])
    del argv[argv.index("--probe-out"):argv.index("--probe-out") + 2]
    from densekit.cli import build_parser, commands, resolve
    from densekit.training.config import TrainConfig
    from densekit.training.losses.base import distributed_world
    from densekit.training.train import train

    parsed = build_parser().parse_args(["train", *argv])
    config = TrainConfig(*resolve(commands()["train"], parsed))
    probe = Probe()
    output = train(config, callbacks=[probe])
    world = distributed_world()[1]
    summary = probe.summary(world)
    if distributed_world()[0] == 0:
        info = json.loads((output / "densekit_train.json").read_text())
        runtime = info["train_runtime_s"]
        samples = info["global_step"] * info["per_device_batch_size"]  # per process
        out.write_text(json.dumps({**summary, "world_size": world, "global_step": info["global_step"],
                                   "per_device_batch_size": info["per_device_batch_size"],
                                   "train_runtime_s": runtime,
                                   "samples_per_second_per_process": round(samples / runtime, 3),
                                   "train_loss": info["train_loss"]}, indent=2))


if __name__ == "__main__":
    main()
