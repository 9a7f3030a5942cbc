"""Which checkpoint a rerun resumes from: the newest *complete* one.

Hugging Face's ``get_last_checkpoint`` picks the checkpoint folder with the highest step, whatever is in it. The
trainer writes a checkpoint file by file, in place (weights, optimizer, scheduler, RNG states, and
``trainer_state.json`` last), so a job killed while saving leaves a newest folder that is half-written: resuming
from it fails, or silently restarts the optimizer. A checkpoint counts here when ``trainer_state.json`` parses and
names its step, it has model weights, and every weight / state file in it is whole (a safetensors header that
fits the file; a torch zip archive whose directory and CRCs check out). Incomplete folders are reported and
removed, so the trainer never rotates, loads or overwrites them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("*.safetensors", "pytorch_model.bin")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name} is truncated (header)"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return f"{path.name} has a corrupt header"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if 8 + length + max(ends, default=0) != size:
        return f"{path.name} is truncated ({size} bytes, its header describes {8 + length + max(ends, default=0)})"
    return None


def _zip_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{path.name} is not a whole torch file ({exc})"
    return f"{path.name} is corrupt (member {bad})" if bad else None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it is complete."""
    match = CHECKPOINT.match(folder.name)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save did not finish)"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (ValueError, OSError, AttributeError):
        return "trainer_state.json is not readable JSON"
    if match and step != int(match.group(1)):
        return f"trainer_state.json says step {step}"
    weights = [p for pattern in WEIGHTS for p in folder.rglob(pattern)]
    if not weights:
        return "no model weights"
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            problem = _zip_problem(path)
        else:
            continue
        if problem:
            return problem
    return None


def missing_rng_states(folder: Path, world_size: int) -> str | None:
    """Which per-process RNG files a ``world_size``-process run lacks in ``folder``: every process saves its own,
    with no barrier before rank 0 writes ``trainer_state.json``, so a kill can leave a checkpoint that looks whole
    but would resume process k with a fresh RNG (training then leaves the uninterrupted run's path)."""
    if world_size <= 1:
        return None
    missing = [f"rng_state_{i}.pth" for i in range(world_size) if not (folder / f"rng_state_{i}.pth").is_file()]
    return f"no {', '.join(missing)} (that process had not finished saving)" if missing else None


def last_complete_checkpoint(folder: str | os.PathLike, remove_incomplete: bool = True,
                             world_size: int = 1) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder`` (None when there is none); newer incomplete ones are
    logged as skipped and, with ``remove_incomplete``, deleted. A checkpoint that lacks only the RNG state of some of
    ``world_size`` processes is skipped but kept; when every checkpoint lacks it (the run had another number of
    processes), the newest is used, as Hugging Face would, with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))),
                   reverse=True)
    fallback = None
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            rng = missing_rng_states(path, world_size)
            if rng is None:
                return str(path)
            logger.warning("skipping checkpoint %s: %s (kept)", path, rng)
            fallback = fallback or path
            continue
        logger.warning("skipping incomplete checkpoint %s: %s%s", path, problem,
                       " (removed)" if remove_incomplete else "")
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    if fallback is not None:
        logger.warning("no checkpoint holds the RNG state of all %d processes (was the run started with another "
                       "number?); resuming from %s without it", world_size, fallback)
        return str(fallback)
    return None
