"""Faults: half-written checkpoints, damaged cache files, a read-only output folder, a full disk, a missing model,
and SIGKILL at random moments (the fast part of scripts/faults/crash.py). Each ends in "recovered, nothing lost"
or a clear error naming the path, with whatever was written before intact."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from densekit.cli import main
from densekit.errors import DataError, OutputError
from tests.helpers import scifact_subset

REPO = Path(__file__).resolve().parents[1]


# --- half-written checkpoints --------------------------------------------------------------------------------------

def write_rows(path: Path, n: int = 24) -> Path:
    rows = [{"query": f"question {i} about topic {i % 5}", "positive": f"answer {i} on topic {i % 5}",
             "negatives": [f"unrelated text {i + 1}"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A 6-step run with its last two checkpoints (steps 4 and 6) kept."""
    from densekit.training.config import TrainConfig
    from densekit.training.train import train

    root = tmp_path_factory.mktemp("ckpt")
    data = write_rows(root / "train.jsonl")
    options = {"model": tiny_model_dir, "data": str(data), "output": str(root / "out"), "max_steps": 6,
               "batch_size": 4, "save_steps": 2, "logging_steps": 1, "keep_checkpoints": True, "report_to": "none"}
    train(TrainConfig.from_options(**options))
    return root, options


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
    "truncated trainer_state.json": lambda c: truncate(c / "trainer_state.json"),
    "truncated model.safetensors": lambda c: truncate(c / "model.safetensors"),
    "truncated optimizer.pt": lambda c: truncate(c / "optimizer.pt"),
    "no weights": lambda c: (c / "model.safetensors").unlink(),
    "corrupt rng_state.pth": lambda c: (c / "rng_state.pth").write_bytes(b"\0" * 100),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_the_newest_complete_checkpoint_is_chosen(trained, tmp_path, damage, caplog):
    from transformers.trainer_utils import get_last_checkpoint

    from densekit.training.checkpoints import last_complete_checkpoint

    folder = tmp_path / "out.checkpoints"
    shutil.copytree(trained[0] / "out.checkpoints", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-4", "checkpoint-6"]  # save_total_limit 2
    assert last_complete_checkpoint(folder, remove_incomplete=False).endswith("checkpoint-6")
    DAMAGE[damage](folder / "checkpoint-6")
    assert get_last_checkpoint(str(folder)).endswith("checkpoint-6")  # Hugging Face would resume from it
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(folder).endswith("checkpoint-4")
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-6" in caplog.text
    assert not (folder / "checkpoint-6").exists()  # removed, so the trainer never loads or rotates it


def test_a_checkpoint_missing_one_process_rng_state_is_skipped_not_removed(trained, tmp_path, caplog):
    """Under torchrun every process saves its own RNG state, with no barrier before rank 0 writes
    trainer_state.json: a kill can leave a checkpoint that looks whole but lacks process 1's (found by the torchrun
    kill trials: the rerun drifted from the uninterrupted run by 1.6e-3)."""
    from densekit.training.checkpoints import last_complete_checkpoint

    folder = tmp_path / "out.checkpoints"
    shutil.copytree(trained[0] / "out.checkpoints", folder)
    for checkpoint in folder.iterdir():  # as a 2-process run saves them
        (checkpoint / "rng_state.pth").rename(checkpoint / "rng_state_0.pth")
        shutil.copy(checkpoint / "rng_state_0.pth", checkpoint / "rng_state_1.pth")
    (folder / "checkpoint-6" / "rng_state_1.pth").unlink()
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(folder, world_size=2).endswith("checkpoint-4")
    assert "no rng_state_1.pth" in caplog.text and (folder / "checkpoint-6").is_dir()
    # a run resumed with another number of processes: no checkpoint has all, the newest whole one is used
    assert last_complete_checkpoint(folder, world_size=3).endswith("checkpoint-6")
    assert last_complete_checkpoint(folder, world_size=1).endswith("checkpoint-6")


def test_a_run_killed_while_saving_resumes_from_the_last_whole_checkpoint(trained, tmp_path, caplog):
    """The end-to-end case: the newest checkpoint is half-written, a rerun resumes from the one before and reaches
    the same step as the uninterrupted run."""
    from densekit.training.config import TrainConfig
    from densekit.training.train import train

    root, options = trained
    shutil.copytree(root / "out.checkpoints", tmp_path / "out.checkpoints")
    truncate(tmp_path / "out.checkpoints" / "checkpoint-6" / "model.safetensors")
    (tmp_path / "out.checkpoints" / "checkpoint-6" / "scheduler.pt").unlink()
    with caplog.at_level(logging.WARNING):
        path = train(TrainConfig.from_options(**{**options, "output": str(tmp_path / "out"),
                                                 "keep_checkpoints": False}))
    info = json.loads((path / "densekit_train.json").read_text())
    reference = json.loads((root / "out" / "densekit_train.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-4") and info["global_step"] == reference["global_step"] == 6
    assert "skipping incomplete checkpoint" in caplog.text


def test_a_run_resumed_mid_epoch_under_torchrun_draws_the_uninterrupted_batches():
    """Resumed in the middle of epoch 2 under torchrun, the loader is accelerate's batch skipper around its shard
    around the sampler, and neither forwards ``set_epoch``: without EpochToSampler the sampler shuffles with epoch
    0's order (what the torchrun kill trials found); with it, process 1 gets the uninterrupted run's batches."""
    import torch
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard, skip_first_batches
    from datasets import Dataset
    from transformers import TrainerState

    from densekit.training.sampler_epoch import EpochToSampler

    try:  # sentence-transformers >= 6 moved the samplers into ``base``
        from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.sampler import NoDuplicatesBatchSampler

    rows = Dataset.from_dict({"anchor": [f"query {i}" for i in range(48)], "positive": [f"doc {i}" for i in range(48)]})

    def loader() -> DataLoaderShard:  # what the trainer builds on process 1 of 2 (densekit's default sampler)
        sampler = NoDuplicatesBatchSampler(rows, batch_size=4, drop_last=True, generator=torch.Generator(), seed=7)
        return DataLoaderShard(rows, batch_sampler=BatchSamplerShard(sampler, num_processes=2, process_index=1),
                               collate_fn=lambda batch: [row["anchor"] for row in batch])

    def epoch_begins(dataloader: DataLoaderShard, epoch: float) -> None:
        EpochToSampler().on_epoch_begin(None, TrainerState(epoch=epoch), None, train_dataloader=dataloader)

    uninterrupted = loader()
    epoch_begins(uninterrupted, 2.0)
    batches = list(uninterrupted)
    assert len(batches) == 6 and batches != list(loader())  # epoch 2's order is not epoch 0's
    assert list(skip_first_batches(loader(), 3)) != batches[3:]  # the trainer's own path: epoch 0's order
    resumed = loader()
    epoch_begins(resumed, 2.5)  # the checkpoint's epoch, mid-way through epoch 2
    assert list(skip_first_batches(resumed, 3)) == batches[3:]


# --- damaged cache files -------------------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def test_a_damaged_cache_shard_is_detected_and_encoded_again(tiny_model_dir, tmp_path, monkeypatch, caplog):
    import densekit.vectors.encode as vectors_encode
    from densekit.models import encode, load_model
    from densekit.vectors import encode_cached

    model = load_model(tiny_model_dir)
    texts = [f"document number {i} about subject {i % 7}" for i in range(100)]
    reference = encode(model, texts, show_progress=False)
    calls = []

    def encode_until_interrupted(model, chunk, **kwargs):
        if len(calls) == 4:
            raise Interrupted
        calls.append(len(chunk))
        return encode(model, chunk, **kwargs)

    monkeypatch.setattr(vectors_encode, "encode", encode_until_interrupted)
    with pytest.raises(Interrupted):
        encode_cached(model, texts, tmp_path, shard_size=16)
    (folder,) = (tmp_path / "embeddings").iterdir()
    shards = sorted((folder / "shards").glob("shard-*.arrow"))
    assert len(shards) == 4 and all(s.with_suffix(".json").exists() for s in shards)
    truncate(shards[1], 0.9)  # cut short
    shards[2].with_suffix(".json").unlink()  # killed between the shard and its record
    calls.clear()
    monkeypatch.setattr(vectors_encode, "encode", lambda model, chunk, **kw: calls.append(len(chunk)) or encode(
        model, chunk, **kw))
    with caplog.at_level(logging.WARNING):
        result = encode_cached(model, texts, tmp_path, shard_size=16)
    assert np.allclose(result, reference, atol=1e-6)
    assert calls == [16, 16, 16, 16, 4]  # shards 1-2 again (truncated / unrecorded), 4-6 new; 0 and 3 reused
    assert "wrong size" in caplog.text
    # a finished store damaged afterwards (one flipped bit: same size) is refused, never served
    shard = sorted((folder / "shards").glob("shard-*.arrow"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-200] ^= 0x40
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch") as caught:
        encode_cached(model, texts, tmp_path, shard_size=16)
    assert str(shard) in str(caught.value)
    # deleting the damaged shard, as the error says, re-encodes that shard alone
    shard.unlink()
    calls.clear()
    assert np.array_equal(encode_cached(model, texts, tmp_path, shard_size=16), result) and calls == [16]


# --- a hostile environment -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def mounted_tmpfs(size: str, read_only: bool = False):
    """A small tmpfs (root only); None where it cannot be mounted."""
    folder = Path(tempfile.mkdtemp(prefix="densekit-fs-"))
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                              capture_output=True).returncode == 0
    try:
        yield folder if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def read_only_folder():
    """A folder nothing can be written to: a read-only tmpfs as root (root ignores file modes), mode 0555 else."""
    if os.geteuid() != 0:
        folder = Path(tempfile.mkdtemp(prefix="densekit-ro-"))
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
            shutil.rmtree(folder, ignore_errors=True)
        return
    with mounted_tmpfs("1m") as folder:
        if folder is None:
            pytest.skip("running as root without the right to mount a read-only tmpfs")
        (folder / "previous.jsonl").write_text("kept\n")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder


@pytest.fixture(scope="module")
def small_beir(tmp_path_factory, scifact_dir):
    return scifact_subset(scifact_dir, tmp_path_factory.mktemp("beir") / "beir", n_queries=10, n_docs=120)


def cli(*argv: str, capsys) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_read_only_output_folder_is_a_clear_error_before_any_work(small_beir, tiny_model_dir, tmp_path, capsys):
    with read_only_folder() as folder:
        for argv in (["mine", "--data", str(small_beir), "--output", str(folder / "mined.jsonl"), "--retriever",
                      "bm25"],
                     ["index", "--model", tiny_model_dir, "--data", str(small_beir), "--output", str(folder / "idx"),
                      "--cache-dir", "none"],
                     ["train", "--model", tiny_model_dir, "--data", str(write_rows(tmp_path / "t.jsonl")),
                      "--output", str(folder / "model"), "--max-steps", "1"]):
            code, err = cli(*argv, capsys=capsys)
            assert code == 2 and str(folder) in err and "cannot write" in err, err
            assert "Traceback" not in err
        assert sorted(p.name for p in folder.iterdir()) in ([], ["previous.jsonl"])


def test_a_full_disk_keeps_the_previous_output(small_beir, tiny_model_dir, tmp_path, capsys):
    """A mined file and an index are rewritten on a disk that fills up mid-write: a clear error naming the path,
    and the previous file / folder byte for byte as it was, with no temporary file left."""
    first = tmp_path / "first"
    assert cli("mine", "--data", str(small_beir), "--output", str(first / "mined.jsonl"), "--retriever", "bm25",
               "--num-negatives", "6", capsys=capsys)[0] == 0
    assert cli("index", "--model", tiny_model_dir, "--data", str(small_beir), "--output", str(first / "index"),
               "--cache-dir", "none", "--report-queries", "0", capsys=capsys)[0] == 0
    mined = (first / "mined.jsonl").read_bytes()
    with mounted_tmpfs("256k") as disk:
        if disk is None:  # not root: the same failure from a file size limit (EFBIG) in a child process
            return full_disk_without_root(small_beir, tmp_path)
        shutil.copy(first / "mined.jsonl", disk / "mined.jsonl")
        shutil.copytree(first / "index", disk / "index")
        index_files = {p.name: p.read_bytes() for p in (disk / "index").iterdir()}
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"x" * max(0, free - 24 * 1024))  # ~24 KiB left: less than either output
        code, err = cli("mine", "--data", str(small_beir), "--output", str(disk / "mined.jsonl"), "--retriever",
                        "bm25", "--num-negatives", "6", capsys=capsys)
        assert code == 2 and str(disk / "mined.jsonl") in err and "No space left on device" in err, err
        assert (disk / "mined.jsonl").read_bytes() == mined
        (disk / "filler2").write_bytes(b"x" * max(0, shutil.disk_usage(disk).free - 4 * 1024))  # less than an index
        code, err = cli("index", "--model", tiny_model_dir, "--data", str(small_beir), "--output",
                        str(disk / "index"), "--cache-dir", "none", "--report-queries", "0", capsys=capsys)
        assert code == 2 and str(disk / "index") in err and "Traceback" not in err, err
        assert {p.name: p.read_bytes() for p in (disk / "index").iterdir()} == index_files
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "filler2", "index", "mined.jsonl"]  # no temp


def test_training_on_a_full_disk_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    """torch.save reports a full disk as "unexpected pos 8768 vs 8660": densekit names the folder and the cause,
    and the model already at the output path is untouched."""
    with mounted_tmpfs("12m") as disk:
        if disk is None:
            pytest.skip("needs root to mount a small tmpfs")
        shutil.copytree(tiny_model_dir, disk / "model")  # a previous model at the output path
        before = {p.name: p.read_bytes() for p in (disk / "model").rglob("*") if p.is_file()}
        code, err = cli("train", "--model", tiny_model_dir, "--data", str(write_rows(tmp_path / "t.jsonl")),
                        "--output", str(disk / "model"), "--max-steps", "4", "--save-steps", "2", "--batch-size", "4",
                        "--report-to", "none", capsys=capsys)
        assert code == 2 and f"{disk / 'model.checkpoints'}: cannot write: the disk is full" in err, err[-2000:]
        assert {p.name: p.read_bytes() for p in (disk / "model").rglob("*") if p.is_file()} == before


def full_disk_without_root(small_beir: Path, tmp_path: Path) -> None:
    out = tmp_path / "limited"
    out.mkdir()
    (out / "mined.jsonl").write_text("previous\n")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-m", "densekit.cli", "mine", "--data", str(small_beir), "--output",
                           str(out / "mined.jsonl"), "--retriever", "bm25", "--num-negatives", "6"],
                          capture_output=True, text=True, preexec_fn=limit, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and str(out / "mined.jsonl") in proc.stderr, proc.stderr[-2000:]
    assert (out / "mined.jsonl").read_text() == "previous\n" and sorted(os.listdir(out)) == ["mined.jsonl"]


def test_atomic_writes_turn_write_failures_into_output_errors(tmp_path):
    from densekit.io import atomic_open

    target = tmp_path / "out.txt"
    target.write_text("before")
    with pytest.raises(OutputError, match="out.txt: cannot write"), atomic_open(target) as handle:
        handle.write("x")
        raise OSError(28, "No space left on device")
    with pytest.raises(FileNotFoundError), atomic_open(target) as handle:  # the caller's own errors stay theirs
        handle.write("x")
        open(tmp_path / "missing-input")  # noqa: SIM115
    assert target.read_text() == "before" and os.listdir(tmp_path) == ["out.txt"]


def test_a_missing_model_is_a_clear_error(small_beir, tmp_path, capsys):
    code, err = cli("index", "--model", str(tmp_path / "no-such-model"), "--data", str(small_beir), "--output",
                    str(tmp_path / "idx"), capsys=capsys)
    assert code == 2 and f"model folder not found: {tmp_path / 'no-such-model'}" in err, err
    (tmp_path / "empty").mkdir()
    code, err = cli("index", "--model", str(tmp_path / "empty"), "--data", str(small_beir), "--output",
                    str(tmp_path / "idx"), capsys=capsys)
    assert code == 2 and "cannot load model" in err and str(tmp_path / "empty") in err, err
    code, err = cli("index", "--model", "no-such-org/no-such-model", "--data", str(small_beir), "--output",
                    str(tmp_path / "idx"), capsys=capsys)  # offline (HF_HUB_OFFLINE=1): not on the hub for us
    assert code == 2 and "cannot load model 'no-such-org/no-such-model'" in err, err
    assert not (tmp_path / "idx").exists()


def test_the_refresh_worker_reports_a_vanished_corpus(small_beir, tiny_model_dir, tmp_path):
    from densekit.mining.refresh import RefreshJob

    beir = tmp_path / "beir"
    shutil.copytree(small_beir, beir)
    (beir / "corpus.jsonl").unlink()
    job = RefreshJob(data=str(beir), split="train", state_dir=str(tmp_path / "state"), base_model=tiny_model_dir,
                     checkpoint=tiny_model_dir, num_negatives=2)
    (tmp_path / "job.json").write_text(json.dumps(job.to_json()))
    proc = subprocess.run([sys.executable, "-m", "densekit.mining.refresh", str(tmp_path / "job.json")], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and f"refresh: error: {beir}" in proc.stderr and "Traceback" not in proc.stderr


# --- SIGKILL at random moments (the fast part of scripts/faults/crash.py) ---------------------------------------

def test_killed_encoding_resumes_to_the_uninterrupted_result(scifact_dir, tmp_path_factory):
    """SIGKILL corpus encoding at two seeded random moments (in time, or just after a shard appeared), rerun: the
    cached embeddings equal the uninterrupted run's, no shard is left behind. The other commands (mine, index,
    refresh, train, torchrun) get 20 kills each in scripts/faults/crash.py: process start-up makes each kill
    ~10 s, too slow for CI; half-written checkpoints are covered above without a kill."""
    from scripts.faults import crash

    root = tmp_path_factory.mktemp("crash")
    inputs = crash.Inputs(root / "inputs").build(scifact_dir, 10, 150)
    result = crash.run_command("encode-cache", root, inputs, kills=2, seed=0)
    assert result["kill_points"] == 2 and result["trials"] >= 1, result
    assert result["reruns_identical"] == result["trials"], json.dumps(result["details"], indent=1)[:3000]


def test_a_worker_dies_with_the_process_that_started_it(tmp_path):
    """What torchrun's workers (and ANCE's refresh worker) do once densekit starts in them: SIGKILL to the parent
    alone takes them down, although they live in a session of their own."""
    import psutil

    pid_file = tmp_path / "worker.pid"
    worker = (f"import os, time; from densekit.lifecycle import bind_to_launcher; assert bind_to_launcher(); "
              f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    parent = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
              "start_new_session=True); time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DENSEKIT_DIE_WITH_PARENT": "1"}
    proc = subprocess.Popen([sys.executable, "-c", parent, worker], env=env, start_new_session=True)
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
        assert child.is_running()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert not alive, "the worker outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
