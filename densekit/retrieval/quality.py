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


def quality_report(index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int = 10,
                   exact_rows: np.ndarray | None = None) -> dict[str, Any]:
    """recall@k vs exact search on ``queries``, memory against a flat index, and per-query search time."""
    if exact_rows is None:
        exact_rows = exact_neighbors(embeddings, queries, k)
    rows, seconds = timed_search(index, queries, k)
    return {
        f"recall_at_{k}": round(recall_at_k(rows, exact_rows, k), 4),
        "report_queries": int(len(queries)),
        "memory_bytes": index_memory_bytes(index),
        "flat_memory_bytes": int(embeddings.shape[0] * embeddings.shape[1] * 4),
        "search_ms_per_query": round(1000 * seconds / max(1, len(queries)), 4),
    }
