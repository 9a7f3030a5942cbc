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
    # the failing rank's own message first: the other rank's traceback (a peer closed the connection) comes last
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    assert proc.returncode == 0, "\n".join([*errors, proc.stderr[-4000:]])
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


def accelerate_launch(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2`` (on a CPU machine: 2 gloo workers, as torchrun)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def compare_with_one_process(common: list[str], two_flags: list[str], tmp_path: Path, launch=None):
    """Train with ``torchrun`` (2 processes) and alone (batch 8); the records and loss curves of both."""
    (launch or torchrun)("-m", "densekit.cli", "train", *common, *two_flags, "--output", str(tmp_path / "two"))
    single = subprocess.run([sys.executable, "-m", "densekit.cli", "train", *common, "--batch-size", "8", "--output",
                             str(tmp_path / "one")], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two, two_curve = read(tmp_path / "two")
    _, one_curve = read(tmp_path / "one")
    assert two["world_size"] == 2 and two["per_device_batch_size"] == 4 and two["global_step"] == 4
    assert [s for s, _ in two_curve] == [s for s, _ in one_curve] == [1, 2, 3, 4]
    assert np.allclose([v for _, v in two_curve], [v for _, v in one_curve], atol=1e-4)


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
    compare_with_one_process(common, ["--batch-size", "4"], tmp_path)
    # one model folder, written once; the checkpoints were removed by rank 0 after it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_accelerate_launch_trains_like_torchrun(nodrop_model, training_rows, tmp_path):
    common = ["--model", nodrop_model, "--data", str(training_rows), "--max-steps", "4", "--logging-steps", "1",
              "--save-steps", "1000", "--learning-rate", "1e-3"]
    compare_with_one_process(common, ["--batch-size", "4"], tmp_path, launch=accelerate_launch)


def test_cluster_sampler_deals_one_global_batch_per_step(monkeypatch):
    """With 2 processes the sampler yields each global batch as 2 per-device slices; dealt round-robin they
    reunite into exactly the batches one process draws at the global batch size, and the length is exact."""
    import datasets

    from densekit.training import cluster_batching

    rows = datasets.Dataset.from_dict({"anchor": [f"q{i}" for i in range(40)],
                                      "positive": [f"p{i}" for i in range(40)]})
    labels = [i % 5 for i in range(40)]

    def batches(processes: int, batch_size: int, epoch: int) -> list[list[int]]:
        monkeypatch.setattr(cluster_batching, "distributed_world", lambda: (0, processes))
        sampler = cluster_batching.ClusterGroupedBatchSampler(rows, batch_size, False, seed=3, labels=labels)
        sampler.set_epoch(epoch)
        out = list(sampler)
        assert len(out) == len(sampler)
        return out

    for epoch in (0, 1):
        single = batches(1, 8, epoch)
        dealt = batches(2, 4, epoch)
        assert [dealt[i] + dealt[i + 1] for i in range(0, len(dealt), 2)] == single
    assert batches(1, 8, 0) != batches(1, 8, 1)  # the epoch reaches the sampler


def test_cluster_batches_with_two_processes_follow_one_process(nodrop_model, training_rows, tmp_path):
    common = ["--model", nodrop_model, "--data", str(training_rows), "--max-steps", "4", "--logging-steps", "1",
              "--save-steps", "100", "--learning-rate", "1e-3", "--cluster-batches", "auto"]
    compare_with_one_process(common, ["--global-batch-size", "8"], tmp_path)


def test_ance_swaps_on_both_ranks_at_the_same_step(scifact_dir, tiny_model_dir, tmp_path):
    from densekit.cli import main
    from tests.helpers import scifact_subset

    beir = scifact_subset(scifact_dir, tmp_path / "beir", n_queries=40, n_docs=200, splits=("train",))
    mined = tmp_path / "mined.jsonl"
    assert main(["mine", "--data", str(beir), "--retriever", "bm25", "--num-negatives", "2", "--window", "1", "20",
                 "--cache-dir", "none", "--output", str(mined)]) == 0
    out = tmp_path / "ance"
    torchrun(str(REPO / "tests" / "distributed_ance.py"), tiny_model_dir, str(beir), str(mined), str(out))
    info = json.loads((out / "densekit_train.json").read_text())
    ance = info["ance"]
    assert info["world_size"] == 2 and info["global_step"] == 5 and ance["swaps"] >= 1
    steps = ance["swap_steps_by_rank"]
    assert len(steps) == 2 and steps[0] == steps[1] and len(steps[0]) == ance["swaps"]
    events = [json.loads(line) for line in (tmp_path / "ance.ance" / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "launch" for e in events) == ance["refreshes_started"]  # written once, by rank 0
    assert [e["step"] for e in events if e["event"] == "swap"] == steps[0]
    job = json.loads((tmp_path / "ance.ance" / "job-0000.json").read_text())
    assert job["checkpoint"].endswith("checkpoint-2")


def test_adore_encodes_its_fixed_index_once(scifact_dir, tiny_model_dir, tmp_path):
    from tests.helpers import scifact_subset

    beir = scifact_subset(scifact_dir, tmp_path / "beir", n_queries=40, n_docs=200, splits=("train",))
    proc = torchrun("-m", "densekit.cli", "train", "--mode", "adore", "--beir", str(beir), "--model", tiny_model_dir,
                    "--output", str(tmp_path / "adore"), "--max-steps", "3", "--batch-size", "4", "--adore-depth",
                    "50", "--save-steps", "100")
    assert proc.stderr.count("encoded once, on rank 0") == 1
    info = json.loads((tmp_path / "adore" / "densekit_train.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 3 and Path(info["adore"]["index"]).is_dir()


def test_a_killed_two_process_run_resumes(nodrop_model, training_rows, tmp_path):
    """SIGKILL every process of the job once a checkpoint is on disk; the same command resumes from it and ends
    where an uninterrupted run ends, on the same loss curve."""
    import signal
    import time

    args = ["-m", "densekit.cli", "train", "--model", nodrop_model, "--data", str(training_rows), "--max-steps", "60",
            "--logging-steps", "1", "--save-steps", "5", "--learning-rate", "1e-3", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args, "--output", str(output)]
    job = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and job.poll() is None:
        if list((tmp_path / "killed.checkpoints").glob("checkpoint-*/trainer_state.json")):
            break
        time.sleep(0.02)
    # the launcher and its workers (torchrun starts them in their own sessions): a node dying takes all of them
    os.killpg(job.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", str(output)], check=False)
    job.wait()
    time.sleep(1)
    assert not output.exists(), "the job finished before it could be killed"
    torchrun(*args, "--output", str(output))
    torchrun(*args, "--output", str(tmp_path / "straight"))
    resumed, resumed_curve = read(output)
    straight, straight_curve = read(tmp_path / "straight")
    assert resumed["resumed_from"] and resumed["global_step"] == straight["global_step"] == 60
    start = int(Path(resumed["resumed_from"]).name.split("-")[1])
    assert 0 < start < 60
    tail = dict(straight_curve)
    after = [(s, v) for s, v in resumed_curve if s > start]
    assert [s for s, _ in after] == [s for s in tail if s > start]
    assert np.allclose([v for _, v in after], [tail[s] for s, _ in after], atol=1e-4)
