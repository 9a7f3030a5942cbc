"""A FAISS index plus the document ids of its rows and a record of the model that encoded them.

On disk an index is a folder: ``index.faiss``, the ids (``doc_ids.json``, or ``doc_ids.arrow`` for big
corpora: read memory-mapped) and ``meta.json``. Big indexes may also hold ``index.ivfdata`` (IVF lists on
disk, see :mod:`densekit.retrieval.build`) or ``parts/part-NNN/`` (one index per range of rows, served as one
``faiss.IndexShards``). The folder is built under a temporary name and renamed into place, so a crash
mid-write never leaves a half index.

An index type is a function registered in ``INDEX_TYPES`` that returns a *trained, empty* index from a
:class:`TrainingSet` (the corpus size, dim and random samples of its vectors); :meth:`DenseIndex.build` then
adds the vectors block by block, so no builder needs the whole matrix.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.errors import ConfigError, DataError, OutputError
from densekit.io import atomic_dir
from densekit.registry import Registry
from densekit.retrieval.ids import read_ids, write_ids
from densekit.vectors.options import DEFAULT_BUDGET, parse_bytes, rows_within
from densekit.vectors.source import VectorSource, as_source, sample_rows

logger = logging.getLogger(__name__)

INDEX_TYPES: Registry = Registry("index type", "densekit.retrieval.index_types")
FORMAT_VERSION = 1
# densekit's names for the search-time knobs -> faiss.ParameterSpace's names
SEARCH_PARAMS = {"nprobe": "nprobe", "ef_search": "efSearch", "k_factor": "k_factor_rf"}


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document: its id and its score (inner product; cosine for unit vectors)."""

    doc_id: str
    score: float


def first_part(index: faiss.Index) -> faiss.Index:
    """The first sub-index of an ``IndexShards`` (they share their type and knobs), else ``index`` itself."""
    top = faiss.downcast_index(index)
    return faiss.downcast_index(top.at(0)) if isinstance(top, faiss.IndexShards) and top.count() else index


def get_search_params(index: faiss.Index) -> dict[str, Any]:
    """The search-time knobs ``index`` has, with their values (nprobe, ef_search, k_factor)."""
    params: dict[str, Any] = {}
    index = first_part(index)
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine):
        params["k_factor"] = float(top.k_factor)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params["nprobe"] = int(ivf.nprobe)
    if isinstance(top, faiss.IndexHNSW):
        params["ef_search"] = int(top.hnsw.efSearch)
    return params


def apply_search_params(index: faiss.Index, params: dict[str, Any]) -> None:
    """Set search-time knobs in place through ``faiss.ParameterSpace``; a knob the index lacks is a ConfigError."""
    have = get_search_params(index)
    unknown = [name for name in params if name not in have]
    if unknown:
        raise ConfigError(f"{type(faiss.downcast_index(index)).__name__} has no search parameter(s) "
                          f"{', '.join(unknown)}; it takes: {', '.join(have) or 'none'}")
    if "nprobe" in params:
        nlist = faiss.extract_index_ivf(first_part(index)).nlist
        if not 1 <= int(params["nprobe"]) <= nlist:
            raise ConfigError(f"nprobe must be between 1 and nlist={nlist}, got {params['nprobe']}")
    if "ef_search" in params and int(params["ef_search"]) < 1:
        raise ConfigError(f"ef_search must be at least 1, got {params['ef_search']}")
    if "k_factor" in params and float(params["k_factor"]) < 1:
        raise ConfigError(f"k_factor must be at least 1, got {params['k_factor']}")
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, SEARCH_PARAMS[name], float(value))


def _read_flags(meta: dict[str, Any], mmap: bool) -> int:
    # IVF lists on disk are memory-mapped by FAISS itself and found beside index.faiss wherever the folder has moved
    # (IO_FLAG_ONDISK_SAME_DIR); adding IO_FLAG_MMAP to those crashes FAISS 1.15 at search time.
    if meta.get("on_disk"):
        return faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    if not mmap:
        return 0
    # IO_FLAG_MMAP maps IVF inverted lists; IO_FLAG_MMAP_IFC maps flat code arrays (flat, HNSW storage).
    # FAISS refuses both at once on an IVF file, so pick by the recorded type.
    if str(meta.get("index_type", "")).startswith("ivf") or not hasattr(faiss, "IO_FLAG_MMAP_IFC"):
        return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # truncated, not UTF-8, unreadable
        raise DataError(f"not readable JSON ({exc})", path=str(path)) from None


@dataclass
class TrainingSet:
    """What an index type sees while it trains: the corpus size and dim, and seeded random samples of its vectors
    (capped at ``max_rows``, the memory budget's share)."""

    vectors: VectorSource
    max_rows: int | None = None

    @property
    def count(self) -> int:
        return self.vectors.count

    @property
    def dim(self) -> int:
        return self.vectors.dim

    def sample(self, size: int, seed: int) -> np.ndarray:
        """``size`` random rows (sorted; all rows when ``size`` covers the corpus), float32."""
        size = min(size, self.count)
        if self.max_rows is not None and size > self.max_rows:
            logger.info("training on %d vectors instead of %d to stay within the memory budget", self.max_rows, size)
            size = self.max_rows
        return self.vectors.take(sample_rows(self.count, size, seed))


def index_builder(index_type: str, params: dict[str, Any]):
    """The registered builder of ``index_type``, with ``params`` checked against what it takes."""
    return INDEX_TYPES.get_checked(index_type, params, noun="parameter", internal=("vectors",))


def add_rows(index: faiss.Index, vectors: VectorSource, block_rows: int, start: int = 0, stop: int | None = None,
             ids_from: int | None = None) -> None:
    """Add rows ``start:stop`` of ``vectors`` block by block (with ids counted from ``ids_from`` when given)."""
    for row, block in vectors.blocks(block_rows, start, stop):
        if ids_from is None:
            index.add(block)
        else:
            index.add_with_ids(block, np.arange(row - ids_from, row - ids_from + len(block), dtype=np.int64))


class RowSearch:
    """Typed hits from anything with ``search(queries, k) -> (scores, rows)`` and ``doc_ids``."""

    doc_ids: Sequence[str]

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
        """Typed hits from the arrays :meth:`search` returns (missing rows, -1, left out)."""
        return [[Hit(self.doc_ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
                for srow, rrow in zip(scores, rows, strict=True)]

    def search_hits(self, query_embeddings: np.ndarray, k: int) -> list[list[Hit]]:
        return self.hits(*self.search(query_embeddings, k))


@dataclass
class DenseIndex(RowSearch):
    index: faiss.Index
    doc_ids: Sequence[str]
    meta: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = field(default=None, compare=False)  # where it was loaded from (None: built in memory)

    @classmethod
    def build(cls, embeddings: np.ndarray | VectorSource, doc_ids: Sequence[str] | None = None,
              index_type: str = "flat", params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
              memory_budget: int | None = None) -> DenseIndex:
        """An index over ``embeddings`` (an array with ``doc_ids``, or a vector source with its own ids), trained
        and filled block by block within ``memory_budget`` bytes of corpus data (default 1GB)."""
        vectors = as_source(embeddings, doc_ids)
        if doc_ids is not None and vectors.count != len(doc_ids):
            raise DataError(f"{vectors.count} embeddings but {len(doc_ids)} document ids")
        if vectors.count == 0:
            raise DataError("cannot build an index over an empty corpus")
        params = dict(params or {})
        builder = index_builder(index_type, params)
        budget = memory_budget or parse_bytes(DEFAULT_BUDGET)
        start = time.perf_counter()
        index = builder(TrainingSet(vectors, rows_within(budget, vectors.dim)), **params)
        index = fill(index, vectors, rows_within(budget, vectors.dim), gpu=params.get("gpu", True))
        full_meta = base_meta(index, index_type, params, vectors, time.perf_counter() - start)
        full_meta.update(meta or {})
        ids = list(doc_ids) if doc_ids is not None else vectors.ids
        return cls(index=index, doc_ids=ids, meta=full_meta)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_search_params(self, **params: Any) -> None:
        """Change nprobe / ef_search / k_factor; recorded in meta so a saved index reloads with them."""
        apply_search_params(self.index, params)
        self.meta["search_params"] = get_search_params(self.index)

    def search(self, query_embeddings: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row indices) in query batches; rows past the corpus size come back as -1."""
        k = min(k, self.index.ntotal)
        queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        scores = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            s, r = self.index.search(queries[start:start + batch_size], k)
            scores[start:start + batch_size], rows[start:start + batch_size] = s, r
        return scores, rows

    @property
    def query_model(self) -> str | None:
        """The model that encodes queries for this index: the one that built it, or the query encoder trained
        against it (ADORE); None when the index records none."""
        return self.meta.get("query_model") or self.meta.get("resolved") or self.meta.get("model")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            parts = self.meta.get("parts")
            try:
                if parts:
                    top = faiss.downcast_index(self.index)
                    for i in range(len(parts)):
                        self._write_part(top.at(i), tmp / part_dir(i), part_dir(i))
                else:
                    self._write_part(self.index, tmp, ".")
            except RuntimeError as exc:  # FAISS reports a failed write (disk full, ...) as a RuntimeError
                raise OutputError(f"cannot write index.faiss ({str(exc).strip().splitlines()[-1]}); nothing "
                                  "under this name was changed", path=str(folder)) from None
            write_ids(tmp, self.doc_ids)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n")
        return folder

    def _write_part(self, index: faiss.Index, target: Path, relative: str) -> None:
        from densekit.retrieval.gpu import to_cpu

        target.mkdir(parents=True, exist_ok=True)
        if self.meta.get("on_disk") and self.folder is not None:  # the lists stay in their file: copy it along
            shutil.copyfile(self.folder / relative / "index.ivfdata", target / "index.ivfdata")
        faiss.write_index(to_cpu(index), str(target / "index.faiss"))

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> DenseIndex:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        meta = _read_json(meta_path) if meta_path.exists() else None
        if meta is not None and not isinstance(meta, dict):
            raise DataError("meta.json must hold an object", path=str(meta_path))
        missing = [name for name, present in (
            ("index.faiss", (folder / "index.faiss").exists() or bool(meta and meta.get("parts"))),
            ("doc_ids.json", (folder / "doc_ids.json").exists() or (folder / "doc_ids.arrow").exists()),
            ("meta.json", meta is not None)) if not present]
        if missing or meta is None:
            raise DataError(f"not a densekit index folder: {missing[0]} is missing", path=str(folder))
        flags = _read_flags(meta, mmap)
        parts = meta.get("parts")
        if parts:
            index = faiss.IndexShards(int(meta["dim"]), True, True)  # threaded; rows numbered part after part
            for i in range(len(parts)):
                index.add_shard(_read_index(folder / part_dir(i), flags))
        else:
            index = _read_index(folder, flags)
        doc_ids = read_ids(folder)
        if index.ntotal != len(doc_ids):
            raise DataError(f"index holds {index.ntotal} vectors but the folder lists {len(doc_ids)} document ids",
                            path=str(folder))
        if meta.get("search_params"):
            apply_search_params(index, meta["search_params"])
        return cls(index=index, doc_ids=doc_ids, meta=meta, folder=folder)


def part_dir(i: int) -> str:
    return f"parts/part-{i:03d}"


def _read_index(folder: Path, flags: int) -> faiss.Index:
    if not (folder / "index.faiss").exists():
        raise DataError("not a densekit index folder: index.faiss is missing", path=str(folder))
    try:
        return faiss.read_index(str(folder / "index.faiss"), flags)
    except RuntimeError as exc:  # a truncated or corrupt file
        raise DataError(f"FAISS cannot read it ({str(exc).strip().splitlines()[-1]})",
                        path=str(folder / "index.faiss")) from None


def fill(index: faiss.Index, vectors: VectorSource, block_rows: int, gpu: bool = True) -> faiss.Index:
    """Add every vector to a trained, empty index, block by block; IVF lists are filled on the GPU when faiss has
    one (and ``gpu``). Returns the filled CPU index (a new object after a GPU round trip)."""
    from densekit.retrieval.gpu import to_cpu, to_gpu

    plain_ivf = faiss.try_extract_index_ivf(index) is not None and not isinstance(faiss.downcast_index(index),
                                                                                   faiss.IndexRefine)
    work = to_gpu(index, enabled=gpu) if plain_ivf else index
    add_rows(work, vectors, block_rows)
    if work is index:
        return index
    knobs = get_search_params(index)
    filled = to_cpu(work)
    apply_search_params(filled, knobs)
    return filled


def base_meta(index: faiss.Index, index_type: str, params: dict[str, Any], vectors: VectorSource,
              seconds: float) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "index_type": index_type, "params": params, "dim": int(vectors.dim),
            "count": vectors.count, "metric": "inner_product", "build_seconds": round(seconds, 3),
            "faiss_class": type(faiss.downcast_index(index)).__name__, "search_params": get_search_params(index)}
