"""densekit train: contrastive fine-tuning of a sentence-transformers model (options: densekit.training.config)."""

from __future__ import annotations

import os

from densekit.training.config import OPTION_GROUPS, TrainConfig

NAME = "train"
HELP = ("train a bi-encoder (InfoNCE with in-batch + hard negatives by default; modes static, star, ance, adore); "
        "resumes after an interrupt; runs under torchrun / accelerate launch")
OPTIONS = OPTION_GROUPS


def run(*groups) -> int:
    from densekit.training.train import train

    path = train(TrainConfig(*groups))
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per process
        print(f"model written to {path}")
    return 0
