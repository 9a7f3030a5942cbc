"""Exact inner-product search: the reference every approximate index is measured against."""

from __future__ import annotations

import faiss

from densekit.retrieval.index import INDEX_TYPES, TrainingSet


@INDEX_TYPES.register("flat")
def build_flat(vectors: TrainingSet) -> faiss.Index:
    return faiss.IndexFlatIP(vectors.dim)
