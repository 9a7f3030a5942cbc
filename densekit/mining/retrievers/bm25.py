"""BM25 candidates: bm25s (Lucene's scoring variant, English stemming and stop words) by default, or real
Lucene through pyserini with ``backend="lucene"`` (``pip install "densekit[lucene]"``; see
``densekit.mining.lucene``). ``method``, ``stemmer`` and ``stopwords`` apply to bm25s only: Lucene uses
Anserini's English analyzer (Porter stemming, Lucene's English stop words)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from densekit.data.beir import doc_text
from densekit.errors import ConfigError
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates

BACKENDS = ("bm25s", "lucene")


@RETRIEVERS.register("bm25")
@dataclass
class BM25Retriever:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    backend: str = "bm25s"
    name: str = "bm25"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"bm25: unknown backend '{self.backend}'; choose one of: {', '.join(BACKENDS)}")
        if self.backend == "lucene":
            from densekit.mining import lucene

            lucene.check_installed()

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
        if self.backend == "lucene":
            from densekit.mining import lucene

            doc_ids, qids = list(corpus), list(queries)
            return lucene.bm25_search(doc_ids, [doc_text(corpus[d]) for d in doc_ids], qids,
                                      [queries[q] for q in qids], k, k1=self.k1, b=self.b,
                                      threads=os.cpu_count() or 1)
        import bm25s

        stemmer = None
        if self.stemmer:
            import Stemmer

            stemmer = Stemmer.Stemmer(self.stemmer)
        doc_ids = list(corpus)
        tokens = bm25s.tokenize([doc_text(corpus[d]) for d in doc_ids], stopwords=self.stopwords,
                                stemmer=stemmer, show_progress=True)
        index = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        index.index(tokens, show_progress=True)
        qids = list(queries)
        q_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=self.stopwords, stemmer=stemmer,
                                  show_progress=False)
        k = min(k, len(doc_ids))
        rows, scores = index.retrieve(q_tokens, k=k, show_progress=True)
        out: Candidates = {}
        for qid, row, score in zip(qids, rows, scores, strict=True):
            out[qid] = [(doc_ids[int(r)], float(s)) for r, s in zip(row, score, strict=True) if s > 0]
        return out
