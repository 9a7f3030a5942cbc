"""BM25 candidates with bm25s (Lucene's scoring variant, English stemming and stop words)."""

from __future__ import annotations

from dataclasses import dataclass

from densekit.data.beir import doc_text
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates


@RETRIEVERS.register("bm25")
@dataclass
class BM25Retriever:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    name: str = "bm25"

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
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
