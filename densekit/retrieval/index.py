"""A FAISS index plus the document ids of its rows and a record of the model that encoded them.

On disk an index is a folder: ``index.faiss``, ``doc_ids.json`` and ``meta.json``. The folder is
built under a temporary name and renamed into place, so a crash mid-write never leaves a half index.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.errors import ConfigError, DataError, OutputError
from densekit.io import atomic_dir
from densekit.registry import Registry

INDEX_TYPES: Registry = Registry("index type", "densekit.retrieval.index_types")
FORMAT_VERSION = 1
# densekit's names for the search-time knobs -> faiss.ParameterSpace's names
SEARCH_PARAMS = {"nprobe": "nprobe", "ef_search": "efSearch", "k_factor": "k_factor_rf"}


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document: its id and its score (inner product; cosine for unit vectors)."""

    doc_id: str
    score: float


def get_search_params(index: faiss.Index) -> dict[str, Any]:
    """The search-time knobs ``index`` has, with their values (nprobe, ef_search, k_factor)."""
    params: dict[str, Any] = {}
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
        nlist = faiss.extract_index_ivf(index).nlist
        if not 1 <= int(params["nprobe"]) <= nlist:
            raise ConfigError(f"nprobe must be between 1 and nlist={nlist}, got {params['nprobe']}")
    if "ef_search" in params and int(params["ef_search"]) < 1:
        raise ConfigError(f"ef_search must be at least 1, got {params['ef_search']}")
    if "k_factor" in params and float(params["k_factor"]) < 1:
        raise ConfigError(f"k_factor must be at least 1, got {params['k_factor']}")
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, SEARCH_PARAMS[name], float(value))


def _mmap_flags(meta: dict[str, Any]) -> int:
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
class DenseIndex:
    index: faiss.Index
    doc_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = field(default=None, compare=False)  # where it was loaded from (None: built in memory)

    @classmethod
    def build(cls, embeddings: np.ndarray, doc_ids: list[str], index_type: str = "flat",
              params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> DenseIndex:
        if len(embeddings) != len(doc_ids):
            raise DataError(f"{len(embeddings)} embeddings but {len(doc_ids)} document ids")
        if len(doc_ids) == 0:
            raise DataError("cannot build an index over an empty corpus")
        builder = INDEX_TYPES.get(index_type)
        params = dict(params or {})
        accepted = inspect.signature(builder).parameters
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ConfigError(f"index type '{index_type}' has no parameter(s) {', '.join(unknown)}; "
                              f"it takes: {', '.join(p for p in accepted if p != 'embeddings') or 'none'}")
        start = time.perf_counter()
        index = builder(np.ascontiguousarray(embeddings, dtype=np.float32), **params)
        full_meta = {"format_version": FORMAT_VERSION, "index_type": index_type, "params": params,
                     "dim": int(embeddings.shape[1]), "count": len(doc_ids), "metric": "inner_product",
                     "build_seconds": round(time.perf_counter() - start, 3),
                     "faiss_class": type(faiss.downcast_index(index)).__name__,
                     "search_params": get_search_params(index)}
        full_meta.update(meta or {})
        return cls(index=index, doc_ids=list(doc_ids), meta=full_meta)

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

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
        """Typed hits from the arrays :meth:`search` returns (missing rows, -1, left out)."""
        return [[Hit(self.doc_ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
                for srow, rrow in zip(scores, rows, strict=True)]

    def search_hits(self, query_embeddings: np.ndarray, k: int) -> list[list[Hit]]:
        return self.hits(*self.search(query_embeddings, k))

    @property
    def query_model(self) -> str | None:
        """The model that encodes queries for this index: the one that built it, or the query encoder trained
        against it (ADORE); None when the index records none."""
        return self.meta.get("query_model") or self.meta.get("resolved") or self.meta.get("model")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            index = self.index
            if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
                index = faiss.index_gpu_to_cpu(index)
            try:
                faiss.write_index(index, str(tmp / "index.faiss"))
            except RuntimeError as exc:  # FAISS reports a failed write (disk full, ...) as a RuntimeError
                raise OutputError(f"cannot write index.faiss ({str(exc).strip().splitlines()[-1]}); nothing "
                                  "under this name was changed", path=str(folder)) from None
            (tmp / "doc_ids.json").write_text(json.dumps(self.doc_ids, ensure_ascii=False))
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> DenseIndex:
        folder = Path(folder)
        for name in ("index.faiss", "doc_ids.json", "meta.json"):
            if not (folder / name).exists():
                raise DataError(f"not a densekit index folder: {name} is missing", path=str(folder))
        doc_ids, meta = (_read_json(folder / name) for name in ("doc_ids.json", "meta.json"))
        if not isinstance(doc_ids, list) or not isinstance(meta, dict):
            raise DataError("doc_ids.json must hold a list and meta.json an object", path=str(folder))
        try:
            index = faiss.read_index(str(folder / "index.faiss"), _mmap_flags(meta) if mmap else 0)
        except RuntimeError as exc:  # a truncated or corrupt file
            raise DataError(f"FAISS cannot read it ({str(exc).strip().splitlines()[-1]})",
                            path=str(folder / "index.faiss")) from None
        if index.ntotal != len(doc_ids):
            raise DataError(f"index holds {index.ntotal} vectors but doc_ids.json lists {len(doc_ids)}",
                            path=str(folder))
        if meta.get("search_params"):
            apply_search_params(index, meta["search_params"])
        return cls(index=index, doc_ids=doc_ids, meta=meta, folder=folder)
