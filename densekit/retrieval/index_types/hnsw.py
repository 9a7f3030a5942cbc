"""HNSW: a navigable small-world graph searched greedily from the top layer down.

Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using Hierarchical
Navigable Small World graphs" (TPAMI 2018). ``m`` links per node, ``ef_construction`` candidates while
inserting, ``ef_search`` candidates while searching (raise it for recall, lower it for speed).
FAISS has no GPU HNSW, so this index always runs on the CPU.
"""

from __future__ import annotations

import faiss

from densekit.errors import ConfigError
from densekit.retrieval.index import INDEX_TYPES, TrainingSet


@INDEX_TYPES.register("hnsw")
def build_hnsw(vectors: TrainingSet, m: int = 32, ef_construction: int = 200, ef_search: int = 128) -> faiss.Index:
    for name, value in (("m", m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"hnsw {name} must be a positive integer, got {value!r}")
    index = faiss.IndexHNSWFlat(vectors.dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    return index
