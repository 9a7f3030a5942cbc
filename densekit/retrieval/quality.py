"""How good and how big an approximate index is: recall@k against exact search, memory, query time.

Small numpy-in/numpy-out helpers, used by ``densekit index`` (the build report in meta.json) and by
``scripts/bench/index_types.py``.
"""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np

from densekit.retrieval.gpu import to_cpu
from densekit.vectors.source import VectorSource, as_source


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (the ANN-benchmarks "k-recall@k")."""
    if approx_rows.shape[0] != exact_rows.shape[0]:
        raise ValueError(f"{approx_rows.shape[0]} approximate result rows but {exact_rows.shape[0]} exact ones")
    if len(exact_rows) == 0:
        return float("nan")
    hits = []
    for approx, exact in zip(approx_rows[:, :k], exact_rows[:, :k], strict=True):
        truth = {int(r) for r in exact if r >= 0}
        if truth:
            hits.append(len(truth.intersection(int(r) for r in approx if r >= 0)) / len(truth))
    return float(np.mean(hits)) if hits else float("nan")


def exact_neighbors(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact inner-product top-k of each query."""
    flat = faiss.IndexFlatIP(embeddings.shape[1])
    flat.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(embeddings)))[1]


def index_memory_bytes(index: faiss.Index) -> int:
    """Bytes of the serialized index: vectors/codes, lists, graph and centroids (what RAM holds, give or take)."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexShards):
        return sum(index_memory_bytes(top.at(i)) for i in range(top.count()))
    return int(faiss.serialize_index(to_cpu(index)).size)


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    """(row indices, best-of-``repeats`` seconds) for one batched search of ``queries``."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best, rows = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        rows = index.search(queries, min(k, index.ntotal))[1]
        best = min(best, time.perf_counter() - start)
    return rows, best


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))


def quality_report(index: faiss.Index, embeddings: np.ndarray | VectorSource, queries: np.ndarray, k: int = 10,
                   exact_rows: np.ndarray | None = None, memory_bytes: int | None = None) -> dict[str, Any]:
    """recall@k vs exact search on ``queries`` (streamed over the vectors, so any corpus size), memory against a
    flat index (``memory_bytes`` overrides the measured size, e.g. with the lists on disk), per-query time."""
    vectors = as_source(embeddings)
    if exact_rows is None:
        from densekit.retrieval.exhaustive import ExactScan

        exact_rows = ExactScan(vectors).search(queries, k)[1]
    rows, seconds = timed_search(index, queries, k)
    return {
        f"recall_at_{k}": round(recall_at_k(rows, exact_rows, k), 4),
        "report_queries": int(len(queries)),
        "memory_bytes": index_memory_bytes(index) if memory_bytes is None else int(memory_bytes),
        "flat_memory_bytes": int(vectors.count * vectors.dim * 4),
        "search_ms_per_query": round(1000 * seconds / max(1, len(queries)), 4),
    }
