"""Dense candidates: any sentence-transformers model, corpus embeddings cached on disk, FAISS top-k.

The corpus is encoded once per (model, corpus) and cached in resumable shards; queries are searched
in batches, so no queries x documents matrix is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densekit.data.beir import doc_text
from densekit.embeddings import encode_cached
from densekit.encoders import load_encoder
from densekit.errors import DataError
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates
from densekit.models import default_cache_dir, encode
from densekit.retrieval.index import DenseIndex


def embed_queries_and_corpus(model_name: str, queries: dict[str, str], corpus: dict[str, dict[str, str]],
                             batch_size: int, bf16: bool, cache_dir: str | None,
                             max_seq_length: int | None = None,
                             backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    model = load_encoder(model_name, max_seq_length, backend, cache_dir, bf16)
    doc_emb = encode_cached(model, [doc_text(corpus[d]) for d in corpus], cache_dir,
                            batch_size=batch_size, bf16=bf16, desc="encode corpus")
    q_emb = encode(model, list(queries.values()), batch_size=batch_size, bf16=bf16, desc="encode queries")
    return q_emb, doc_emb


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
    # precomputed corpus embeddings (.npy, rows in corpus order, unit norm), memory-mapped instead of encoding
    corpus_embeddings: str | None = None
    name: str = "dense"

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
        if self.corpus_embeddings:
            doc_emb = np.load(self.corpus_embeddings, mmap_mode="r", allow_pickle=False)
            if doc_emb.ndim != 2 or len(doc_emb) != len(corpus):
                raise DataError(f"holds {doc_emb.shape} embeddings for a corpus of {len(corpus)} documents",
                                path=self.corpus_embeddings)
            model = load_encoder(self.model, self.max_seq_length, self.backend, self.cache_dir, self.bf16)
            q_emb = encode(model, list(queries.values()), batch_size=self.batch_size, bf16=self.bf16,
                           desc="encode queries")
        else:
            q_emb, doc_emb = embed_queries_and_corpus(self.model, queries, corpus, self.batch_size, self.bf16,
                                                      self.cache_dir, self.max_seq_length, self.backend)
        index = DenseIndex.build(doc_emb, list(corpus), self.index_type)
        hits = index.search_hits(q_emb, k)
        return {qid: [(h.doc_id, h.score) for h in found] for qid, found in zip(queries, hits, strict=True)}
