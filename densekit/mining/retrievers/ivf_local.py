"""IVF-local candidates: the members of the query's own and neighbouring k-means clusters of the corpus.

The corpus embeddings are clustered with spherical k-means (FAISS); each query is assigned its
``1 + neighbours`` nearest centroids and its candidates are the members of those clusters, ranked by similarity
(an IVF search with ``nprobe = 1 + neighbours``). Use a wide window with ``random-in-window`` to draw
cluster-local negatives that are not the very top. (This retriever was called ``cluster`` and described as
"ClusterNS-style"; ClusterNS - Deng et al., Findings of ACL 2023 - clusters *training batches* online and uses
the nearest other centroid as a hard negative, which is the training loss ``--loss clusterns``.)

After ``retrieve``, ``doc_clusters`` maps each document to its cluster and ``query_clusters`` each
query to its nearest cluster, so the miner can record them per negative for auditing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from densekit.data.corpus import corpus_ids
from densekit.errors import DataError
from densekit.mining.clustering import MAX_POINTS_PER_CENTROID, assign, default_n_clusters, kmeans
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates
from densekit.mining.retrievers.dense import embed_queries_and_corpus
from densekit.models import default_cache_dir
from densekit.vectors import VectorSource, as_source
from densekit.vectors.options import DEFAULT_BUDGET, parse_bytes, rows_within
from densekit.vectors.source import sample_rows


def cluster_topk(q_emb: np.ndarray, doc_emb: np.ndarray | VectorSource, centroids: np.ndarray, k: int, nprobe: int,
                 batch_size: int = 1024, block_rows: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, rows, doc_assignment): top-``k`` documents inside each query's ``nprobe`` nearest clusters."""
    vectors = as_source(doc_emb)
    d = vectors.dim
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, d, len(centroids), faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True  # the quantizer already holds the k-means centroids
    assignment = np.empty(vectors.count, dtype=np.int64)
    for row, block in vectors.blocks(block_rows):
        index.add(block)
        assignment[row:row + len(block)] = assign(block, centroids)
    index.nprobe = min(nprobe, len(centroids))
    k = min(k, vectors.count)
    scores = np.empty((len(q_emb), k), dtype=np.float32)
    rows = np.empty((len(q_emb), k), dtype=np.int64)
    for start in range(0, len(q_emb), batch_size):
        s, r = index.search(np.ascontiguousarray(q_emb[start:start + batch_size], dtype=np.float32), k)
        scores[start:start + batch_size], rows[start:start + batch_size] = s, r
    return scores, rows, assignment


@RETRIEVERS.register("ivf-local")
@dataclass
class IvfLocalRetriever:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    bf16: bool = False
    cache_dir: str | None = str(default_cache_dir())
    max_seq_length: int | None = None
    backend: str = "auto"
    n_clusters: int | None = None  # default sqrt(corpus size)
    neighbours: int = 1
    niter: int = 20
    seed: int = 42
    memory_budget: str = DEFAULT_BUDGET
    dtype: str = "float32"
    shard_size: int = 16384
    name: str = "ivf-local"
    doc_clusters: dict[str, int] = field(default_factory=dict, repr=False)
    query_clusters: dict[str, int] = field(default_factory=dict, repr=False)

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
        if not corpus:
            raise DataError("cannot cluster an empty corpus")
        q_emb, vectors = embed_queries_and_corpus(self.model, queries, corpus, self.batch_size, self.bf16,
                                                  self.cache_dir, self.max_seq_length, self.backend,
                                                  dtype=self.dtype, shard_size=self.shard_size)
        # k-means sees at most 256 points a centroid anyway (FAISS subsamples): only those are read
        n_clusters = self.n_clusters or default_n_clusters(vectors.count)
        sample = vectors.take(sample_rows(vectors.count, MAX_POINTS_PER_CENTROID * n_clusters, self.seed))
        centroids = kmeans(sample, n_clusters, niter=self.niter, seed=self.seed)
        block_rows = rows_within(parse_bytes(self.memory_budget, "cluster.memory_budget"), vectors.dim)
        scores, rows, doc_assignment = cluster_topk(q_emb, vectors, centroids, k, 1 + self.neighbours,
                                                    block_rows=block_rows)
        doc_ids = corpus_ids(corpus)
        self.doc_clusters = {doc: int(c) for doc, c in zip(doc_ids, doc_assignment, strict=True)}
        self.query_clusters = {q: int(c) for q, c in zip(queries, assign(q_emb, centroids), strict=True)}
        return {qid: [(doc_ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
                for qid, srow, rrow in zip(queries, scores, rows, strict=True)}
