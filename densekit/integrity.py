"""Arrays on disk that prove they are whole: each ``.npy`` has a record beside it (``<name>.check.json``: size,
SHA-256, shape, dtype), written after the array itself.

Writes are atomic (a kill never leaves a half file under the name), but a file can still be damaged after it was
written: a truncated copy, a flipped bit, a disk error. :func:`load_verified` reads an array only when it matches
its record; anything else (no record, another size or digest, a file NumPy cannot parse) is reported and treated
as missing, so the caller computes it again instead of silently using it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from densekit.io import atomic_open, atomic_write_json

logger = logging.getLogger(__name__)


def record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.check.json")


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as ``.npy`` (atomically), then its record. The old record goes first: a kill in between leaves
    an array without a record, never an array beside the record of the one it replaced."""
    path = Path(path)
    record_path(path).unlink(missing_ok=True)
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    atomic_write_json(record_path(path), {"bytes": path.stat().st_size, "sha256": file_digest(path),
                                          "shape": list(array.shape), "dtype": str(array.dtype)})


def problem(path: Path, rows: int | None = None, require_record: bool = True) -> str | None:
    """Why the array at ``path`` cannot be trusted (None when it matches its record, and has ``rows`` rows).

    ``require_record=False`` accepts a file without a record (a kill between the array and its record): the
    array was written atomically, so it is whole unless damaged later; its rows are still checked on load.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        record = json.loads(record_path(path).read_text(encoding="utf-8"))
        size, digest, shape = int(record["bytes"]), str(record["sha256"]), list(record["shape"])
    except FileNotFoundError:
        return None if not require_record else f"no record {record_path(path).name} (the write did not finish)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable record {record_path(path).name}"
    if path.stat().st_size != size:
        return f"{path.stat().st_size} bytes where its record says {size} (truncated or replaced)"
    if rows is not None and shape[:1] != [rows]:
        return f"{shape[0] if shape else 0} rows where {rows} are expected"
    if file_digest(path) != digest:
        return "its SHA-256 differs from its record (the file is corrupt)"
    return None


def load_verified(path: Path, rows: int | None = None, require_record: bool = True) -> np.ndarray | None:
    """The array at ``path`` if it is whole (see :func:`problem`), else None, with a warning when a file was there
    but is not trusted."""
    path = Path(path)
    reason = problem(path, rows, require_record)
    if reason is None:
        try:
            array = np.load(path, allow_pickle=False)
            if rows is None or len(array) == rows:
                return array
            reason = f"{len(array)} rows where {rows} are expected"
        except (OSError, ValueError, EOFError) as exc:
            reason = f"NumPy cannot read it ({exc})"
    if reason != "missing":
        logger.warning("not using %s: %s; it will be computed again", path, reason)
    return None
