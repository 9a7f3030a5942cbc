"""ANCE-style asynchronous negative refresh during training, and a step timer to show what it costs.

Every ``every`` steps :class:`AnceRefresher` saves the model as a checkpoint and starts the refresh worker
(``python -m densekit.mining.refresh``) in its own process; training does not wait. Before each step it
checks whether the worker has finished: on success the new negatives replace the old ones in the
:class:`~densekit.training.dynamic_data.NegativeStore` in one assignment (the swap), on failure the old ones
stay and the next refresh is tried at the next interval. Each event (launch, swap with its cost and the
overlap between old and new negatives, failure with the end of the worker's log) is appended to
``events.jsonl`` in the state folder; :class:`StepTimer` writes every step's wall time to ``step_times.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from densekit.training.dynamic_data import NegativeStore

logger = logging.getLogger(__name__)


def negatives_overlap(old: dict[str, list[str]], new: dict[str, list[str]]) -> float:
    """Mean over queries of |old & new| / |new|: how much of the new negatives the model had already seen."""
    shares = [len(set(old.get(q, [])) & set(docs)) / len(docs) for q, docs in new.items() if docs]
    return round(sum(shares) / len(shares), 4) if shares else 0.0


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, with whether a refresh was running, to ``step_times.jsonl``."""

    def __init__(self, path: str | Path, refresher: AnceRefresher | None = None) -> None:
        self.path = Path(path)
        self.refresher = refresher
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:
            return
        record = {"step": state.global_step, "seconds": round(time.perf_counter() - self._start, 3)}
        if self.refresher is not None:
            record["refresh_running"] = self.refresher.running
            record["negatives_version"] = self.refresher.store.version
        _append(self.path, record)


class AnceRefresher(TrainerCallback):
    def __init__(self, store: NegativeStore, state_dir: str | Path, job: dict[str, Any], every: int,
                 command: list[str] | None = None, keep_checkpoints: bool = False) -> None:
        if every < 1:
            raise ValueError("the refresh interval must be at least one step")
        self.store = store
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.every = every
        self.command = command or [sys.executable, "-m", "densekit.mining.refresh"]
        self.keep_checkpoints = keep_checkpoints
        self.events = self.state_dir / "events.jsonl"
        self.count = 0  # refreshes started
        self.swaps = 0
        self.failures = 0
        self._proc: subprocess.Popen | None = None
        self._current: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def on_step_begin(self, args, state, control, **kwargs):
        self.poll(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.poll(state.global_step)
        step = state.global_step
        if step % self.every == 0 and self._proc is None and step < state.max_steps and model is not None:
            self.launch(model, step)

    def on_train_end(self, args, state, control, **kwargs):
        if self._proc is not None and self._current is not None and self._result_path(self._current).exists():
            try:  # the worker has written its result and is only exiting: take it rather than cancel it
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.poll(state.global_step)
        if self._proc is not None:  # training is done: a refresh still running would be wasted
            self._proc.terminate()
            self._proc.wait()
            self._record({"event": "cancelled", "step": state.global_step, "refresh": self._current["refresh"]})
            self._proc = None
        if not self.keep_checkpoints:
            for path in self.state_dir.glob("checkpoint-*"):
                shutil.rmtree(path, ignore_errors=True)

    def launch(self, model, step: int) -> None:
        start = time.perf_counter()
        checkpoint = self.state_dir / f"checkpoint-{step}"
        tmp = self.state_dir / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(str(tmp))
        shutil.rmtree(checkpoint, ignore_errors=True)
        os.replace(tmp, checkpoint)
        job = {**self.job, "checkpoint": str(checkpoint), "state_dir": str(self.state_dir), "refresh": self.count}
        job_path = self.state_dir / f"job-{self.count:04d}.json"
        job_path.write_text(json.dumps(job, indent=2))
        log = open(self.state_dir / f"worker-{self.count:04d}.log", "w", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(job.get("threads") or 1)}
        self._proc = subprocess.Popen([*self.command, str(job_path)], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self._current = {"refresh": self.count, "step": step, "checkpoint": str(checkpoint),
                         "started": time.time()}
        self._record({"event": "launch", "step": step, "refresh": self.count,
                      "snapshot_seconds": round(time.perf_counter() - start, 3)})
        self.count += 1

    def poll(self, step: int) -> None:
        if self._proc is None or self._proc.poll() is None:
            return
        rc = self._proc.returncode
        current = self._current or {}
        self._proc = None
        out = self._result_path(current)
        if rc == 0 and out.exists():
            try:
                self.swap(out, step, current)
                return
            except (OSError, ValueError, KeyError) as err:
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

    def _result_path(self, current: dict) -> Path:
        return self.state_dir / f"negatives-{current.get('refresh', 0):04d}.json"

    def swap(self, path: Path, step: int, current: dict) -> None:
        result = json.loads(path.read_text(encoding="utf-8"))
        new = {str(q): [str(d) for d in docs] for q, docs in result["negatives"].items()}
        start = time.perf_counter()
        old = self.store.swap(new, version=self.store.version + 1)
        swap_s = time.perf_counter() - start
        self.swaps += 1
        record = {"event": "swap", "step": step, "refresh": result.get("refresh"),
                  "launched_at_step": current.get("step"), "swap_seconds": round(swap_s, 6),
                  "overlap_with_previous": negatives_overlap(old, new),
                  "wall_seconds": round(time.time() - current.get("started", time.time()), 2),
                  **result.get("stats", {})}
        logger.info("negatives refreshed (refresh %s from step %s): %s", record["refresh"],
                    record["launched_at_step"], {k: record[k] for k in ("docs_encoded", "seconds",
                                                                         "overlap_with_previous") if k in record})
        self._record(record)
        if not self.keep_checkpoints and current.get("checkpoint"):
            shutil.rmtree(current["checkpoint"], ignore_errors=True)

    def _record(self, record: dict) -> None:
        _append(self.events, {"time": round(time.time(), 3), **record})
