"""Crash recovery: SIGKILL densekit's long-running commands at random moments, rerun them, check nothing is lost.

For each command in :data:`COMMANDS` the harness runs it once uninterrupted (the reference), then a number of
seeded trials: each trial starts the command in a fresh folder, SIGKILLs its whole process tree (torchrun's
workers included: they live in their own sessions) one to three times, and after every kill checks that no
output name holds a half-written file; then it reruns the same command to completion and compares the outputs
with the reference. Kill moments are half uniform in time over the reference run, half "just after something
appeared" in the folders the command writes (a checkpoint file, a cache shard), where half-written state lives: the
n-th new entry, n uniform over the entries the reference run wrote, so every checkpoint of a run gets kills.

    python scripts/faults/crash.py --kills 20 --seed 0 --output runs/faults/crash.json       # every command
    python scripts/faults/crash.py --commands mine index --kills 4                          # some of them

Adding a command (e.g. ``densekit encode`` once it exists) is one :class:`Command` entry: its argv, the outputs
that must be whole-or-absent, the folders to watch, and how to compare a run with the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
DENSEKIT = [PY, "-m", "densekit.cli"]
REF: dict[str, Path] = {}  # command name -> the folder of its uninterrupted reference run
REF_ENTRIES: dict[str, int] = {}  # command name -> entries that appeared in its watched folders during that run


@dataclass
class Inputs:
    """What every command reads, built once: a real SciFact slice, two tiny dropout-free models, mined data."""

    root: Path
    beir: Path = field(init=False)
    model: Path = field(init=False)
    checkpoint: Path = field(init=False)
    mined: Path = field(init=False)

    def __post_init__(self) -> None:
        self.beir, self.model = self.root / "beir", self.root / "tiny"
        self.checkpoint, self.mined = self.root / "tiny-refreshed", self.root / "mined.jsonl"

    def build(self, scifact: Path, n_queries: int, n_docs: int) -> Inputs:
        from densekit.data.beir import load_beir
        from densekit.io import atomic_write_jsonl
        from densekit.mining.miner import MineConfig, mine
        from densekit.models import build_random_bert, resolve_model
        from tests.helpers import scifact_subset

        if (self.root / "ready").exists():
            return self
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        scifact_subset(scifact, self.beir, n_queries=n_queries, n_docs=n_docs)
        tokenizer = resolve_model("all-MiniLM-L6-v2")
        for path, seed in ((self.model, 0), (self.checkpoint, 1)):  # dropout 0: training is deterministic
            build_random_bert(path, tokenizer, layers=2, hidden=32, heads=2, intermediate=64, max_position=128,
                              max_seq_length=64, seed=seed, dropout=0.0)
        records = mine(load_beir(self.beir, "train"), MineConfig(retrievers=["bm25"], num_negatives=2))
        atomic_write_jsonl(self.mined, (r.to_json() for r in records))
        (self.root / "ready").write_text("ok")
        return self


# --- comparing a run with the reference --------------------------------------------------------------------------

def same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} differs from the reference {b}"


def same_json(a: Path, b: Path, drop: tuple[str, ...] = (), replace: tuple[str, str] | None = None) -> None:
    def load(path: Path, swap: bool) -> dict:
        text = path.read_text(encoding="utf-8")
        if swap and replace:
            text = text.replace(*replace)
        obj = json.loads(text)
        for key in drop:
            obj.pop(key, None)
        return obj

    assert load(a, True) == load(b, False), f"{a} differs from the reference {b}"


def stale_temp_files(folder: Path) -> list[str]:
    """Temporary files a killed atomic write left (never read by anything, reported)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def index_vectors(folder: Path) -> np.ndarray:
    from densekit.retrieval.index import DenseIndex

    index = DenseIndex.load(folder)
    return index.index.reconstruct_n(0, index.index.ntotal)


def compare_index(run: Path, ref: Path, inputs: Inputs | None = None) -> dict:
    same_bytes(run / "index" / "doc_ids.json", ref / "index" / "doc_ids.json")
    assert np.array_equal(index_vectors(run / "index"), index_vectors(ref / "index")), "index vectors differ"
    volatile = ("build_seconds", "report", "corpus")
    same_json(run / "index" / "meta.json", ref / "index" / "meta.json", drop=volatile)
    return {}


def partial_index(run: Path, ref: Path) -> None:
    if (run / "index").exists():  # an index folder appears whole or not at all
        compare_index(run, ref)


def cache_folders(work: Path) -> list[Path]:
    return sorted(p for p in (work / "cache" / "embeddings").glob("*") if p.is_dir())


def partial_cache(run: Path, ref: Path) -> None:
    """Every store shard that has a record matches it (size and sha256); one without is simply redone by the rerun."""
    from densekit.vectors.shards import ShardInfo, sha256_of

    for folder in cache_folders(run):
        for record in (folder / "shards").glob("*.json"):
            info = ShardInfo.from_json(json.loads(record.read_text()), record)
            data = folder / info.file
            assert data.exists() and data.stat().st_size == info.bytes, f"{data}: missing or wrong size"
            assert sha256_of(data.read_bytes()) == info.sha256, f"{data}: sha256 differs from its record"


def store_vectors(folder: Path) -> tuple[list[str], np.ndarray]:
    from densekit.vectors import EmbeddingStore

    store = EmbeddingStore.open(folder, verify=True)
    return list(store.ids), store.read_all()


def final_embeddings(work: Path) -> tuple[list[str], np.ndarray]:
    folders = cache_folders(work)
    assert len(folders) == 1, f"expected one cache folder in {work}, found {folders}"
    return store_vectors(folders[0])


def compare_encode(run: Path, ref: Path, inputs: Inputs | None = None) -> dict:
    (ids_run, emb_run), (ids_ref, emb_ref) = final_embeddings(run), final_embeddings(ref)
    assert ids_run == ids_ref and np.array_equal(emb_run, emb_ref), "cached embeddings differ"
    return {}


def compare_mine(run: Path, ref: Path, inputs: Inputs | None = None) -> dict:
    same_bytes(run / "mined.jsonl", ref / "mined.jsonl")
    same_json(run / "mined.jsonl.mining.json", ref / "mined.jsonl.mining.json", replace=(str(run), str(ref)))
    return {}


def partial_mine(run: Path, ref: Path) -> None:
    if (run / "mined.jsonl").exists():
        same_bytes(run / "mined.jsonl", ref / "mined.jsonl")
    if (run / "mined.jsonl.mining.json").exists():
        compare_mine(run, ref)
    partial_cache(run, ref)


def compare_refresh(run: Path, ref: Path, inputs: Inputs | None = None) -> dict:
    a = json.loads((run / "state" / "negatives-0000.json").read_text())
    b = json.loads((ref / "state" / "negatives-0000.json").read_text())
    assert a["negatives"] == b["negatives"], "refreshed negatives differ"
    (ids_run, emb_run), (ids_ref, emb_ref) = (store_vectors(w / "state" / "embeddings") for w in (run, ref))
    assert ids_run == ids_ref and np.array_equal(emb_run, emb_ref), "refreshed document embeddings differ"
    return {}


def partial_refresh(run: Path, ref: Path) -> None:
    if (run / "state" / "negatives-0000.json").exists():
        compare_refresh(run, ref)
    partial_cache(run, ref)


def model_state(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_ndcg(model: Path, beir: Path) -> float:
    from densekit.data.beir import load_beir
    from densekit.evaluation.beir import dense_run
    from densekit.evaluation.metrics import evaluate_run
    from densekit.models import load_model

    dataset = load_beir(beir, "test")
    run = dense_run(load_model(str(model)), dataset, k=100)
    return float(evaluate_run(dataset.qrels, run)["ndcg_at_10"])


def compare_train(run: Path, ref: Path, inputs: Inputs | None = None) -> dict:
    """Same step count, same weights (training a dropout-free model is deterministic), and the test nDCG@10 of
    both models (on the slice's test split) when ``inputs`` are given."""
    a = json.loads((run / "model" / "densekit_train.json").read_text())
    b = json.loads((ref / "model" / "densekit_train.json").read_text())
    assert a["global_step"] == b["global_step"], f"step {a['global_step']} != {b['global_step']}"
    sa, sb = model_state(run / "model"), model_state(ref / "model")
    diff = max(float(np.max(np.abs(sa[k] - sb[k]))) for k in sb)
    figures = {"resumed_from": a.get("resumed_from"), "max_weight_diff": diff, "global_step": a["global_step"]}
    if inputs is not None:
        figures["ndcg_at_10"] = test_ndcg(run / "model", inputs.beir)
        figures["reference_ndcg_at_10"] = test_ndcg(ref / "model", inputs.beir)
        assert abs(figures["ndcg_at_10"] - figures["reference_ndcg_at_10"]) <= 0.01, figures
    assert diff <= 1e-5, f"resumed model differs from the uninterrupted one by {diff} ({figures})"
    return figures


def partial_train(run: Path, ref: Path) -> None:
    from densekit.training.checkpoints import checkpoint_problem, missing_rng_states

    if (run / "model").exists():  # the model folder appears whole or not at all
        assert (run / "model" / "densekit_train.json").is_file() and (run / "model" / "model.safetensors").is_file()
    checkpoints = list((run / "model.checkpoints").glob("checkpoint-*"))
    world = 2 if any((p / "rng_state_0.pth").exists() for p in checkpoints) else 1  # train-torchrun runs 2
    broken = [p.name for p in checkpoints if checkpoint_problem(p) or missing_rng_states(p, world)]
    if broken:
        (run / "half_written_checkpoints.txt").write_text("\n".join(broken))


# --- commands ----------------------------------------------------------------------------------------------------

@dataclass
class Command:
    name: str
    argv: Callable[[Path, Inputs], list[str]]
    compare: Callable[..., dict]  # (run, reference, inputs): a finished run against the reference (AssertionError)
    partial: Callable[[Path, Path], None]  # after a kill: nothing half-written under an output name
    watch: tuple[str, ...] = ()  # folders (relative to the run folder) whose new entries trigger "event" kills
    prepare: Callable[[Path, Inputs], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


def refresh_job(work: Path, inputs: Inputs) -> None:
    from densekit.mining.refresh import RefreshJob

    job = RefreshJob(data=str(inputs.beir), split="train", state_dir=str(work / "state"),
                     base_model=str(inputs.model), checkpoint=str(inputs.checkpoint), num_negatives=2,
                     fraction=0.5, refresh=0, cache_dir=str(work / "cache"), batch_size=32)
    (work / "state").mkdir(parents=True, exist_ok=True)
    (work / "job.json").write_text(json.dumps(job.to_json()))


TRAIN_ARGS = ["--max-steps", "24", "--batch-size", "8", "--save-steps", "3", "--logging-steps", "1",
              "--learning-rate", "1e-3", "--seed", "7", "--report-to", "none", "--dataloader-drop-last"]

COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("mine", lambda w, i: [*DENSEKIT, "mine", "--data", str(i.beir), "--split", "train", "--output",
                                  str(w / "mined.jsonl"), "--retriever", "bm25", "--retriever", "dense", "--model",
                                  str(i.model), "--cache-dir", str(w / "cache"), "--num-negatives", "2"],
            compare_mine, partial_mine, watch=("cache/embeddings", ".")),
    Command("index", lambda w, i: [*DENSEKIT, "index", "--model", str(i.model), "--data", str(i.beir), "--output",
                                   str(w / "index"), "--cache-dir", str(w / "cache"), "--report-queries", "20"],
            compare_index, partial_index, watch=("cache/embeddings", ".")),
    # the corpus-encoding cache on its own, in small shards (densekit encode will be one more entry here)
    Command("encode-cache", lambda w, i: [PY, str(REPO / "scripts" / "faults" / "encode_corpus.py"), "--model",
                                          str(i.model), "--data", str(i.beir), "--cache-dir", str(w / "cache"),
                                          "--shard-size", "16"],
            compare_encode, partial_cache, watch=("cache/embeddings",)),
    Command("refresh", lambda w, i: [PY, "-m", "densekit.mining.refresh", str(w / "job.json")],
            compare_refresh, partial_refresh, watch=("state", "cache/embeddings"), prepare=refresh_job),
    Command("train", lambda w, i: [*DENSEKIT, "train", "--model", str(i.model), "--data", str(i.mined), "--output",
                                   str(w / "model"), *TRAIN_ARGS],
            compare_train, partial_train, watch=("model.checkpoints",)),
    Command("train-torchrun", lambda w, i: [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                            "2", "-m", "densekit.cli", "train", "--model", str(i.model), "--data",
                                            str(i.mined), "--output", str(w / "model"), *TRAIN_ARGS[:2],
                                            "--batch-size", "4", *TRAIN_ARGS[4:]],
            compare_train, partial_train, watch=("model.checkpoints",), env={"OMP_NUM_THREADS": "1"}),
]}
DEFAULT_COMMANDS = ("mine", "index", "encode-cache", "refresh", "train")


# --- running and killing -------------------------------------------------------------------------------------------

def environment(command: Command) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "DENSEKIT_LOG": "WARNING", **command.env}


def start(command: Command, work: Path, inputs: Inputs) -> subprocess.Popen:
    log = open(work / "log.txt", "a")  # noqa: SIM115 - the child holds it
    log.write(f"\n--- start {time.strftime('%H:%M:%S')}\n")
    log.flush()
    return subprocess.Popen(command.argv(work, inputs), cwd=work, env=environment(command), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL the process and every descendant (torchrun's workers sit in sessions of their own); how many."""
    import psutil

    try:
        victims = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def run_to_end(command: Command, work: Path, inputs: Inputs, timeout: float = 1800,
               seen: set[str] | None = None) -> float:
    """Run the command to completion (AssertionError unless it exits 0); with ``seen``, collect every entry that
    appears in its watched folders meanwhile (checkpoints and shards are deleted by the end)."""
    start_time = time.perf_counter()
    proc = start(command, work, inputs)
    try:
        while seen is not None and proc.poll() is None and time.perf_counter() - start_time < timeout:
            seen.update(snapshot(work, command.watch))
            time.sleep(0.01)
        code = proc.wait(max(1.0, timeout - (time.perf_counter() - start_time)))
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError(f"{command.name} did not finish within {timeout} s") from None
    assert code == 0, f"{command.name} exited {code}: {(work / 'log.txt').read_text()[-3000:]}"
    return time.perf_counter() - start_time


def snapshot(work: Path, watch: tuple[str, ...]) -> set[str]:
    """Every file and folder under the watched folders (a new shard inside a cache folder counts, a checkpoint's
    files count one by one), temporary files and the log left out."""
    seen = set()
    for folder in watch:
        base = work / folder
        if folder == ".":
            names = [p.name for p in base.iterdir()]
            seen.update(str(base / n) for n in names if not n.startswith((".", "log.txt")))
            continue
        for parent, dirs, files in os.walk(base):  # the command deletes as it goes: os.walk skips what vanished
            seen.update(os.path.join(parent, n) for n in dirs + files if not n.startswith("."))
    return seen


def kill_once(command: Command, work: Path, inputs: Inputs, rng: random.Random, duration: float) -> dict:
    """Start the command and SIGKILL its process tree at a random moment (uniform over the reference run's
    duration, or just after a new entry appeared in a watched folder); then check nothing half-written is visible.
    The record says whether the kill landed (the command may have finished first)."""
    mode = rng.choice(["time", "event"]) if command.watch else "time"
    proc = start(command, work, inputs)
    began, detail = time.perf_counter(), {}
    if mode == "time":
        delay = rng.uniform(0.15 * duration, 1.05 * duration)
        while time.perf_counter() - began < delay and proc.poll() is None:
            time.sleep(0.005)
    else:
        # which new entry to wait for: uniform over those that appeared during the reference run (so every
        # checkpoint / shard gets kills, not only the first), less those already here from an earlier kill
        before = snapshot(work, command.watch)
        skip = rng.randint(0, max(3, REF_ENTRIES[command.name] - len(before) - 1))
        detail = {"after_new_entries": skip + 1}
        deadline = began + 1.5 * duration
        appeared: set[str] = set()  # kept: old checkpoints are rotated away as new ones come
        while time.perf_counter() < deadline and proc.poll() is None:
            appeared |= snapshot(work, command.watch) - before
            if len(appeared) > skip:
                break
            time.sleep(0.003)
        time.sleep(rng.uniform(0.0, 0.25))
    at = time.perf_counter() - began
    if proc.poll() is not None:
        return {"mode": mode, **detail, "at_s": round(at, 3), "killed": False, "exit": proc.returncode}
    killed = kill_tree(proc)
    event = {"mode": mode, **detail, "at_s": round(at, 3), "killed": True, "processes": killed}
    try:
        command.partial(work, REF[command.name])
    except AssertionError as exc:
        event["half_written_visible"] = str(exc)
    return event


def trial(command: Command, work: Path, inputs: Inputs, rng: random.Random, duration: float, kills: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if command.prepare:
        command.prepare(work, inputs)
    events = []
    for _ in range(kills):
        events.append(kill_once(command, work, inputs, rng, duration))
        if not events[-1]["killed"]:
            break  # it finished first: the rest of this trial's kills go to the next trial
    rerun_s = 0.0
    try:
        rerun_s = run_to_end(command, work, inputs)
        figures = command.compare(work, REF[command.name], inputs) or {}
    except AssertionError as exc:
        figures = {"mismatch": str(exc)}
    visible = [k["half_written_visible"] for k in events if "half_written_visible" in k]
    if visible:
        figures["mismatch"] = f"half-written output visible after a kill: {visible[0]}"
    half = work / "half_written_checkpoints.txt"
    return {"kills": events, "rerun_s": round(rerun_s, 2), "stale_temp_files": stale_temp_files(work),
            "half_written_checkpoints_seen": half.read_text().split() if half.exists() else [], **figures}


def run_command(name: str, root: Path, inputs: Inputs, kills: int, seed: int, max_per_trial: int = 3) -> dict:
    """The reference run, then trials until ``kills`` kills have landed; every rerun compared with the reference."""
    command = COMMANDS[name]
    ref = root / name / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    if command.prepare:
        command.prepare(ref, inputs)
    seen: set[str] = set()
    duration = run_to_end(command, ref, inputs, seen=seen)
    REF[name], REF_ENTRIES[name] = ref, len(seen)
    extra = command.compare(ref, ref, inputs) or {}
    rng = random.Random(f"{seed}-{name}")
    trials, landed, attempts = [], 0, 0
    while landed < kills and attempts < 4 * kills:
        n = min(rng.randint(1, max_per_trial), kills - landed)
        result = trial(command, root / name / f"trial-{len(trials)}", inputs, rng, duration, n)
        trials.append(result)
        landed += sum(k["killed"] for k in result["kills"])
        (root / name / "progress.json").write_text(json.dumps({"kill_points": landed, "trials": trials}, indent=1))
        attempts += n
        shutil.rmtree(root / name / f"trial-{len(trials) - 1}", ignore_errors=True)
    return {"command": name, "argv": [str(a) for a in command.argv(Path("RUN"), inputs)],
            "reference_s": round(duration, 2), "reference_entries": REF_ENTRIES[name], "kill_points": landed,
            "trials": len(trials),
            "reruns_identical": sum("mismatch" not in t for t in trials),
            "half_written_checkpoints_seen": sum(len(t["half_written_checkpoints_seen"]) for t in trials),
            "stale_temp_files": sum(len(t["stale_temp_files"]) for t in trials), "reference": extra,
            "details": trials}


def vanishing_corpus(root: Path, inputs: Inputs, times: int, seed: int) -> dict:
    """``densekit index`` while its corpus file is deleted at a random moment: it finishes with the reference
    output (the corpus was read already), or fails with an error naming the corpus; never a traceback, never a
    partial index."""
    command = COMMANDS["index"]
    rng, outcomes = random.Random(f"{seed}-vanish"), []
    ref = root / "vanish" / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    duration = run_to_end(command, ref, inputs)
    for n in range(times):
        work = root / "vanish" / f"run-{n}"
        shutil.rmtree(work, ignore_errors=True)
        beir = work / "beir"
        shutil.copytree(inputs.beir, beir)
        copy = Inputs(inputs.root)
        copy.beir = beir
        proc = start(command, work, copy)
        delay = rng.uniform(0.0, duration)
        time.sleep(delay)
        (beir / "corpus.jsonl").unlink()
        code = proc.wait(600)
        log = (work / "log.txt").read_text()
        if code == 0:
            compare_index(work, ref)
            outcome = "finished, identical index"
        else:
            assert code == 2 and str(beir) in log and "Traceback" not in log, log[-2000:]
            assert not (work / "index").exists(), "a partial index after the error"
            outcome = "clear error naming the corpus"
        outcomes.append({"deleted_at_s": round(delay, 2), "exit": code, "outcome": outcome})
        shutil.rmtree(work, ignore_errors=True)
    return {"command": "index (corpus deleted mid-run)", "runs": times, "outcomes": outcomes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", nargs="*", default=list(DEFAULT_COMMANDS), choices=sorted(COMMANDS),
                        help="commands to kill (none: only --vanish)")
    parser.add_argument("--kills", type=int, default=20, help="kill points per command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/faults/crash-work")
    parser.add_argument("--output", default="runs/faults/crash.json")
    parser.add_argument("--scifact", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--queries", type=int, default=40, help="SciFact queries per split in the slice")
    parser.add_argument("--docs", type=int, default=600, help="documents in the slice")
    parser.add_argument("--vanish", type=int, default=0, help="also run densekit index N times with its corpus "
                                                                 "deleted at a random moment")
    args = parser.parse_args(argv)
    root = Path(args.work).resolve()
    inputs = Inputs(root / "inputs").build(Path(args.scifact), args.queries, args.docs)
    results = []
    if args.vanish:
        results.append(vanishing_corpus(root, inputs, args.vanish, args.seed))
        print(f"vanishing corpus: {results[-1]['outcomes']}", flush=True)
    for name in args.commands:
        started = time.perf_counter()
        result = run_command(name, root, inputs, args.kills, args.seed)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        print(f"{name}: {result['kill_points']} kills in {result['trials']} trials; {result['reruns_identical']} of "
              f"{result['trials']} reruns equal the uninterrupted run ({result['seconds']} s)", flush=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"seed": args.seed, "results": results}, indent=2))
    return 0 if all(r.get("reruns_identical") == r.get("trials") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
