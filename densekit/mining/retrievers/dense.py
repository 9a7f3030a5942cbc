"""Dense candidates: any sentence-transformers model, corpus vectors in an embedding store, exact top-k.

The corpus is encoded once per (model, corpus) into the embedding store in the cache (resumable shards, see
:mod:`densekit.vectors`), then searched exactly by streaming the store through FAISS block by block within
``memory_budget`` (:class:`~densekit.retrieval.exhaustive.ExactScan`): memory stays flat in the corpus size and
no queries x documents matrix is built. ``index`` searches a prebuilt index folder instead (approximate, e.g.
an on-disk IVF from ``densekit index --on-disk``); ``index_type`` other than ``flat`` builds one in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densekit.data.corpus import corpus_fingerprint, corpus_ids
from densekit.encoders import load_encoder
from densekit.errors import DataError
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates
from densekit.models import default_cache_dir, encode
from densekit.retrieval.exhaustive import ExactScan
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.searcher import model_dim
from densekit.vectors import ArrayVectors, EmbeddingStore, VectorSource, corpus_vectors, parse_bytes
from densekit.vectors.options import DEFAULT_BUDGET


def load_vectors(model, corpus, path: str | None, cache_dir: str | None, batch_size: int, bf16: bool,
                 dtype: str = "float32", shard_size: int = 16384) -> VectorSource:
    """The corpus vectors: a given store folder or ``.npy`` (checked against the corpus), else the cached store
    (encoded if missing)."""
    if path is None:
        return corpus_vectors(model, corpus, cache_dir, batch_size=batch_size, bf16=bf16, dtype=dtype,
                              shard_size=shard_size)
    if Path(path).is_dir():
        return EmbeddingStore.open(path, corpus=corpus_fingerprint(corpus), count=len(corpus), dim=model_dim(model))
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2 or len(array) != len(corpus):
        raise DataError(f"holds {array.shape} embeddings for a corpus of {len(corpus)} documents", path=path)
    return ArrayVectors(array, corpus_ids(corpus))


def embed_queries_and_corpus(model_name: str, queries: dict[str, str], corpus, batch_size: int, bf16: bool,
                             cache_dir: str | None, max_seq_length: int | None = None, backend: str = "auto",
                             corpus_embeddings: str | None = None, dtype: str = "float32",
                             shard_size: int = 16384) -> tuple[np.ndarray, VectorSource]:
    model = load_encoder(model_name, max_seq_length, backend, cache_dir, bf16)
    vectors = load_vectors(model, corpus, corpus_embeddings, cache_dir, batch_size, bf16, dtype, shard_size)
    q_emb = encode(model, list(queries.values()), batch_size=batch_size, bf16=bf16, desc="encode queries")
    return q_emb, vectors


@RETRIEVERS.register("dense")
@dataclass
class DenseRetriever:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    bf16: bool = False
    cache_dir: str | None = str(default_cache_dir())
    index_type: str = "flat"
    max_seq_length: int | None = None
    backend: str = "auto"  # auto | torch | onnx | onnx-int8 (densekit.encoders)
    # precomputed corpus vectors instead of encoding: an embedding store folder, or a .npy (rows in corpus order)
    corpus_embeddings: str | None = None
    index: str | None = None  # a prebuilt index folder over this corpus, searched instead (approximate mining)
    memory_budget: str = DEFAULT_BUDGET
    dtype: str = "float32"
    shard_size: int = 16384
    name: str = "dense"

    def retrieve(self, queries: dict[str, str], corpus, k: int) -> Candidates:
        budget = parse_bytes(self.memory_budget, "dense.memory_budget")
        if self.index:
            search = self.prebuilt(corpus)
            model = load_encoder(self.model, self.max_seq_length, self.backend, self.cache_dir, self.bf16)
            q_emb = encode(model, list(queries.values()), batch_size=self.batch_size, bf16=self.bf16,
                           desc="encode queries")
        else:
            q_emb, vectors = embed_queries_and_corpus(self.model, queries, corpus, self.batch_size, self.bf16,
                                                      self.cache_dir, self.max_seq_length, self.backend,
                                                      self.corpus_embeddings, self.dtype, self.shard_size)
            search = (ExactScan(vectors, budget) if self.index_type == "flat" else
                      DenseIndex.build(vectors, None, self.index_type, memory_budget=budget))
        hits = search.search_hits(q_emb, k)
        return {qid: [(h.doc_id, h.score) for h in found] for qid, found in zip(queries, hits, strict=True)}

    def prebuilt(self, corpus) -> DenseIndex:
        index = DenseIndex.load(self.index, mmap=True)
        ids = corpus_ids(corpus)
        rows = np.linspace(0, len(ids) - 1, min(len(ids), 1000)).astype(int)
        if len(index.doc_ids) != len(ids) or any(index.doc_ids[int(r)] != ids[int(r)] for r in rows):
            raise DataError(f"the index holds {len(index.doc_ids)} documents that are not this corpus's "
                            f"{len(ids)}; build it from this corpus", path=self.index)
        return index
