"""Exact top-k over vectors that need not fit in memory: FAISS's ``knn_ground_truth`` pattern.

The corpus vectors are streamed block by block (one shard of the embedding store mapped at a time); each
block goes into a flat FAISS index that is searched and reset, and a ``faiss.ResultHeap`` keeps every
query's best ``k`` so far (``faiss.contrib.exhaustive_search.knn_ground_truth``, which also uses every GPU
faiss can see). Peak memory is about two copies of one block plus ``queries x k`` results, whatever the
corpus size; the results equal a flat index's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth
from tqdm.auto import tqdm

from densekit.retrieval.index import RowSearch
from densekit.vectors.options import DEFAULT_BUDGET, parse_bytes, rows_within
from densekit.vectors.source import VectorSource

logging.getLogger("faiss.contrib.exhaustive_search").setLevel(logging.WARNING)  # a line per block otherwise
RESULT_BYTES = 12  # a float32 score and an int64 row per kept result


class ExactScan(RowSearch):
    """Exact inner-product search over a :class:`~densekit.vectors.source.VectorSource` within a memory budget."""

    def __init__(self, vectors: VectorSource, memory_budget: int | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.vectors = vectors
        self.budget = memory_budget or parse_bytes(DEFAULT_BUDGET)
        self.meta = {"index_type": "exact-scan", "count": vectors.count, "dim": vectors.dim, **(meta or {})}
        self.folder = None

    @property
    def doc_ids(self) -> Sequence[str]:  # type: ignore[override]
        return self.vectors.ids

    @property
    def dim(self) -> int:
        return self.vectors.dim

    @property
    def query_model(self) -> str | None:
        return self.meta.get("model")

    def block_rows(self) -> int:
        # a block as float32, its copy inside the flat index, and the mapped shard it is read from
        return rows_within(self.budget // 2, self.dim, copies=3)

    def query_batch(self, k: int) -> int:
        # the heap and one block's results, per query, in the other half of the budget
        return max(256, self.budget // 2 // max(1, 2 * k * RESULT_BYTES + 4 * self.dim))

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) of every query, exact; the vectors are read once per batch of queries."""
        k = min(k, self.vectors.count)  # below the corpus size no -1 row can enter the heap
        queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        scores = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        if len(queries) == 0 or k == 0:
            return scores, rows
        step = self.query_batch(k)
        for n, start in enumerate(range(0, len(queries), step)):
            s, r = knn_ground_truth(queries[start:start + step], self._blocks(verify=n == 0), k,
                                    metric_type=faiss.METRIC_INNER_PRODUCT)
            scores[start:start + step], rows[start:start + step] = s, r
        return scores, rows

    def _blocks(self, verify: bool) -> Iterator[np.ndarray]:
        block_rows = self.block_rows()
        with tqdm(total=self.vectors.count, desc="exact search", unit=" docs", mininterval=2.0,
                  disable=self.vectors.count <= 4 * block_rows) as progress:
            for _, block in self.vectors.blocks(block_rows, verify=verify):
                yield block
                progress.update(len(block))
