"""ANCE-style asynchronous negative refresh during training, and a step timer to show what it costs.

Every ``every`` steps :class:`AnceRefresher` saves the model as a checkpoint and starts the refresh worker
(``python -m densekit.mining.refresh JOB.json``, a :class:`~densekit.mining.refresh.RefreshJob`) in its own
process; training does not wait. Before each step it checks whether the worker has finished: on success the new
negatives replace the old ones in the :class:`~densekit.training.rows.NegativeStore` in one assignment (the
swap), on failure the old ones stay and the next refresh is tried at the next interval. Each event (launch, swap
with its cost and the overlap between old and new negatives, failure with the end of the worker's log) is
appended to ``events.jsonl`` in the state folder; :class:`StepTimer` writes every step's wall time to
``step_times.jsonl``.

Under ``torchrun`` rank 0 alone launches the worker and decides; the decision (and the new negatives) is
broadcast before every step, so every rank swaps at the same step; the worker runs without the launcher's
``RANK``/``WORLD_SIZE`` variables, as a plain single process. Only rank 0 writes the state folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from densekit.mining.refresh import RefreshJob
from densekit.training.losses.base import distributed_world
from densekit.training.rows import NegativeStore

logger = logging.getLogger(__name__)

# what torchrun / accelerate / Slurm tell a process about its place in a job: not for the worker
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                   "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                   "TORCHELASTIC_MAX_RESTARTS", "ACCELERATE_USE_CPU")


def negatives_overlap(old: dict[str, list[str]], new: dict[str, list[str]]) -> float:
    """Mean over queries of |old & new| / |new|: how much of the new negatives the model had already seen."""
    shares = [len(set(old.get(q, [])) & set(docs)) / len(docs) for q, docs in new.items() if docs]
    return round(sum(shares) / len(shares), 4) if shares else 0.0


def worker_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads or 1), DENSEKIT_DIE_WITH_PARENT="1")
    return env


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def broadcast(obj: Any) -> Any:
    """``obj`` as rank 0 has it, on every rank (itself when not distributed)."""
    if distributed_world()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, with whether a refresh was running, to ``step_times.jsonl`` (rank 0)."""

    def __init__(self, path: str | Path, refresher: AnceRefresher | None = None) -> None:
        self.path = Path(path)
        self.refresher = refresher
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "seconds": round(time.perf_counter() - self._start, 3)}
        if self.refresher is not None:
            record["refresh_running"] = self.refresher.running
            record["negatives_version"] = self.refresher.store.version
        _append(self.path, record)


class AnceRefresher(TrainerCallback):
    def __init__(self, store: NegativeStore, state_dir: str | Path, job: RefreshJob, every: int,
                 command: list[str] | None = None, keep_checkpoints: bool = False) -> None:
        if every < 1:
            raise ValueError("the refresh interval must be at least one step")
        self.store = store
        self.state_dir = Path(state_dir)
        self.job = job
        self.every = every
        self.command = command or [sys.executable, "-m", "densekit.mining.refresh"]
        self.keep_checkpoints = keep_checkpoints
        self.events = self.state_dir / "events.jsonl"
        self.leader = distributed_world()[0] == 0
        if self.leader:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0  # refreshes started
        self.swaps = 0
        self.failures = 0
        self.swap_steps: list[int] = []  # the step of every swap on this rank
        self._proc: subprocess.Popen | None = None
        self._current: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def on_step_begin(self, args, state, control, **kwargs):
        self.take(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.take(state.global_step)
        step = state.global_step
        if (self.leader and step % self.every == 0 and self._proc is None and step < state.max_steps
                and model is not None):
            self.launch(model, step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.leader and self._proc is not None and self._current is not None \
                and self._result_path(self._current).exists():
            try:  # the worker has written its result and is only exiting: take it rather than cancel it
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.take(state.global_step)
        if self._proc is not None:  # training is done: a refresh still running would be wasted
            self._proc.terminate()
            self._proc.wait()
            self._record({"event": "cancelled", "step": state.global_step, "refresh": self._current["refresh"]})
            self._proc = None
        if self.leader and not self.keep_checkpoints:
            for path in self.state_dir.glob("checkpoint-*"):
                shutil.rmtree(path, ignore_errors=True)

    def launch(self, model, step: int) -> None:
        start = time.perf_counter()
        checkpoint = self.state_dir / f"checkpoint-{step}"
        tmp = self.state_dir / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        getattr(model, "module", model).save(str(tmp))  # the model itself, not its DDP wrapper
        shutil.rmtree(checkpoint, ignore_errors=True)
        os.replace(tmp, checkpoint)
        job = replace(self.job, checkpoint=str(checkpoint), state_dir=str(self.state_dir), refresh=self.count)
        job_path = self.state_dir / f"job-{self.count:04d}.json"
        job_path.write_text(json.dumps(job.to_json(), indent=2))
        log = open(self.state_dir / f"worker-{self.count:04d}.log", "w", encoding="utf-8")  # noqa: SIM115
        self._proc = subprocess.Popen([*self.command, str(job_path)], stdout=log, stderr=subprocess.STDOUT,
                                      env=worker_env(job.threads))
        log.close()
        self._current = {"refresh": self.count, "step": step, "checkpoint": str(checkpoint),
                         "started": time.time()}
        self._record({"event": "launch", "step": step, "refresh": self.count,
                      "snapshot_seconds": round(time.perf_counter() - start, 3)})
        self.count += 1

    def take(self, step: int) -> None:
        """Rank 0 looks at the worker; every rank applies what rank 0 decided (a swap or nothing)."""
        decision = self.poll(step) if self.leader else None
        decision = broadcast(decision)
        if decision is not None:
            self.swap(decision, step)

    def poll(self, step: int) -> dict[str, Any] | None:
        """The finished worker's new negatives, or None (still running, none running, or failed: logged)."""
        if self._proc is None or self._proc.poll() is None:
            return None
        rc = self._proc.returncode
        current = self._current or {}
        self._proc = None
        out = self._result_path(current)
        if rc == 0 and out.exists():
            try:
                result = json.loads(out.read_text(encoding="utf-8"))
                negatives = {str(q): [str(d) for d in docs] for q, docs in result["negatives"].items()}
                return {"negatives": negatives, "teacher_scores": result.get("teacher_scores"),
                        "refresh": result.get("refresh"), "stats": result.get("stats", {}), "current": current}
            except (OSError, ValueError, KeyError, AttributeError) as err:
                reason = f"unreadable result: {err}"
        else:
            reason = f"worker exited with {rc}"
        self.failures += 1
        log = self.state_dir / f"worker-{current.get('refresh', 0):04d}.log"
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.exists() else ""
        logger.warning("negative refresh %s failed (%s); training goes on with the previous negatives",
                       current.get("refresh"), reason)
        self._record({"event": "failed", "step": step, "refresh": current.get("refresh"), "reason": reason,
                      "log_tail": tail})
        return None

    def _result_path(self, current: dict) -> Path:
        return self.state_dir / f"negatives-{current.get('refresh', 0):04d}.json"

    def swap(self, decision: dict[str, Any], step: int) -> None:
        new, current = decision["negatives"], decision["current"]
        start = time.perf_counter()
        old = self.store.swap(new, version=self.store.version + 1, scores=decision.get("teacher_scores"))
        swap_s = time.perf_counter() - start
        self.swaps += 1
        self.swap_steps.append(step)
        record = {"event": "swap", "step": step, "refresh": decision["refresh"],
                  "launched_at_step": current.get("step"), "swap_seconds": round(swap_s, 6),
                  "overlap_with_previous": negatives_overlap(old, new),
                  "wall_seconds": round(time.time() - current.get("started", time.time()), 2), **decision["stats"]}
        if self.leader:
            logger.info("negatives refreshed (refresh %s from step %s): %s", record["refresh"],
                        record["launched_at_step"], {k: record[k] for k in ("docs_encoded", "seconds",
                                                                             "overlap_with_previous") if k in record})
        self._record(record)
        if self.leader and not self.keep_checkpoints and current.get("checkpoint"):
            shutil.rmtree(current["checkpoint"], ignore_errors=True)

    def _record(self, record: dict) -> None:
        if self.leader:
            _append(self.events, {"time": round(time.time(), 3), **record})

    def summary(self) -> dict[str, Any]:
        """Refresh counts, and the swap steps of every rank (gathered, so rank 0 can record them)."""
        steps = [self.swap_steps]
        if distributed_world()[1] > 1:
            import torch.distributed as dist

            steps = [None] * distributed_world()[1]
            dist.all_gather_object(steps, self.swap_steps)
        return {"state_dir": str(self.state_dir), "refreshes_started": self.count, "swaps": self.swaps,
                "failures": self.failures, "negatives_version": self.store.version, "swap_steps_by_rank": steps}
