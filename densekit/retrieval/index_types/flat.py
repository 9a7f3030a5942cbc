"""Exact inner-product search: the reference every approximate index is measured against."""

from __future__ import annotations

import faiss
import numpy as np

from densekit.retrieval.index import INDEX_TYPES


@INDEX_TYPES.register("flat")
def build_flat(embeddings: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index
