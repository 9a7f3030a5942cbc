"""The experiment script's ``infonce-e3`` row is the main job: the same options as configs/scifact.yaml resolves.

docs/training.md reports ``infonce-e3`` as the main job's recipe; this keeps the script's restated flags and the
config from drifting apart (both are resolved by the real ``densekit`` parser)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from densekit.cli import build_parser, commands, resolve
from scripts import distill_experiments as experiments

ROOT = Path(__file__).resolve().parents[1]
# where a run writes and how often it logs or saves are not part of the recipe
NOT_RECIPE = {"data", "output", "save_steps", "logging_steps"}


def resolved(argv: list[str]) -> dict[str, object]:
    parsed = build_parser().parse_args(argv)
    values = {}
    for opts in resolve(commands()[parsed.command], parsed):
        values.update({k: v for k, v in dataclasses.asdict(opts).items() if k not in NOT_RECIPE})
    return values


@pytest.mark.parametrize("command", ["mine", "train"])
def test_infonce_e3_row_is_the_main_job(command: str) -> None:
    mine_args, pseudo, train_args = experiments.ROWS["infonce-e3"]
    assert pseudo is None
    config = resolved([command, "--config", str(ROOT / "configs" / "scifact.yaml")])
    if command == "mine":
        row = resolved(["mine", "--data", "scifact", "--split", "train", *mine_args, "--cache-dir", "runs/cache",
                        "--output", "x"])
    else:
        row = resolved(["train", "--model", "all-MiniLM-L6-v2", "--data", "x", *experiments.TRAIN, *train_args,
                        "--output", "y"])
    assert row == config
