"""Scale-out training on torch.distributed (2 processes, gloo, CPU).

- Every in-batch loss, with cross-device gathering, gives the loss and the parameter gradients of a 1-process
  step on the whole batch (float64, to 1e-6). Without gathering each rank only sees its own candidates: fewer
  negatives per query, so the loss (and its gradient) is a different function - the test shows it differs.
- ``torchrun ... -m densekit.cli train`` writes one model folder, reaches the right step and follows the loss
  curve of a 1-process run at the same global batch; the same holds with GradCache and cluster batches, and
  under ANCE both ranks swap in the refreshed negatives at the same step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.distributed_cases import CASES, float64_model, one_step, write_data

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2`` on this machine, one thread a process (gloo on the CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def tiny_float_model(tmp_path_factory, minilm_path) -> str:
    return float64_model(tmp_path_factory.mktemp("tiny64"), minilm_path)


@pytest.fixture(scope="module")
def step_data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("ddp-data"))


@pytest.fixture(scope="module")
def two_rank_steps(tiny_float_model, step_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp-steps")
    torchrun(str(REPO / "tests" / "distributed_worker.py"), tiny_float_model, str(step_data), str(out))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_gathered_step_equals_the_full_batch_step(name, tiny_float_model, step_data, two_rank_steps, tmp_path):
    one_step(name, tiny_float_model, step_data, tmp_path, world=1)
    reference = np.load(tmp_path / f"{name}-gather.npz")
    loss = json.loads((tmp_path / f"{name}-gather.json").read_text())["loss"]
    gathered = np.load(two_rank_steps / f"{name}-gather.npz")
    assert json.loads((two_rank_steps / f"{name}-gather.json").read_text())["loss"] == pytest.approx(loss, abs=1e-6)
    assert set(reference.files) == set(gathered.files)
    for key in reference.files:
        assert np.allclose(gathered[key], reference[key], atol=1e-6, rtol=0), key
    local = json.loads((two_rank_steps / f"{name}-local.json").read_text())["loss"]
    if CASES[name].get("local_equals_gathered"):
        assert local == pytest.approx(loss, abs=1e-6)
    else:
        assert abs(local - loss) > 1e-3  # without gathering: fewer negatives per query, another loss


def read(folder: Path) -> tuple[dict, list[tuple[int, float]]]:
    info = json.loads((folder / "densekit_train.json").read_text())
    history = json.loads((folder / "log_history.json").read_text())
    return info, [(e["step"], e["loss"]) for e in history if "loss" in e]


@pytest.fixture(scope="module")
def nodrop_model(tmp_path_factory, minilm_path) -> str:
    from densekit.models import build_random_bert

    return build_random_bert(tmp_path_factory.mktemp("tiny-nodrop") / "st", minilm_path, layers=2, hidden=32,
                             heads=2, intermediate=64, max_position=128, max_seq_length=32, dropout=0.0)


@pytest.fixture(scope="module")
def training_rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp-data") / "train.jsonl"
    rows = [{"query_id": f"q{i}", "query": f"question number {i} about topic {i % 5}",
             "positive": f"answer {i} on topic {i % 5}", "negatives": [f"unrelated text {i + 1}"]} for i in range(64)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("extra", [[], ["--gradcache", "--mini-batch-size", "2"]], ids=["plain", "gradcache"])
def test_two_process_train_follows_the_one_process_run(extra, nodrop_model, training_rows, tmp_path):
    common = ["--model", nodrop_model, "--data", str(training_rows), "--max-steps", "4", "--logging-steps", "1",
              "--save-steps", "2", "--learning-rate", "1e-3", *extra]
    torchrun("-m", "densekit.cli", "train", *common, "--batch-size", "4", "--output", str(tmp_path / "two"))
    single = subprocess.run([sys.executable, "-m", "densekit.cli", "train", *common, "--batch-size", "8", "--output",
                             str(tmp_path / "one")], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two, two_curve = read(tmp_path / "two")
    one, one_curve = read(tmp_path / "one")
    assert two["world_size"] == 2 and two["per_device_batch_size"] == 4 and two["global_step"] == 4
    assert [s for s, _ in two_curve] == [s for s, _ in one_curve] == [1, 2, 3, 4]
    assert np.allclose([v for _, v in two_curve], [v for _, v in one_curve], atol=1e-4)
    # one model folder, written once; the checkpoints were removed by rank 0 after it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
