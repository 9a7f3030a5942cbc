"""Teachers made of other teachers: BM25 over the candidates, and a rank or score fusion of several teachers.

* ``bm25``: Okapi BM25 (bm25s, Lucene's variant, English stemming and stop words, k1 0.9, b 0.4) of each query
  against its candidates. Its document statistics are those of all the candidates scored in one call (for
  mining: every query's pool, most of a small corpus), not of the whole corpus: the scores rank a query's
  candidates as corpus-level BM25 would, up to the idf of rare terms.
* ``fusion``: per query, the component teachers' scores of its candidates (positive included) are combined, by
  reciprocal rank (``method=rrf``: ``sum_t w_t / (rrf_k + rank_t)``, Cormack et al. 2009) or by z-scores within
  the query's list (``method=zscore``: ``sum_t w_t (s_t - mean) / std``). E.g.
  ``--teacher fusion --teacher-option 'teachers=["cross-encoder","bi-encoder","bm25"]'``. Each component keeps its
  own score cache; options of a component go in ``options={"cross-encoder": {"max_seq_length": 256}}``.

Both score a pair relative to the query's other candidates, so they score whole lists at once
(:class:`~densekit.mining.teachers.ListTeacher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError
from densekit.mining.registry import TEACHERS
from densekit.mining.teachers import ListTeacher, group_by_query, score_pairs_cached

METHODS = ("rrf", "zscore")


@TEACHERS.register("bm25")
@dataclass
class BM25Teacher(ListTeacher):
    k1: float = 0.9
    b: float = 0.4
    name: str = "bm25"

    def score_all(self, pairs: Sequence[tuple[str, str]], cache_dir: str | Path | None = None) -> np.ndarray:
        import bm25s
        import Stemmer

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        stemmer = Stemmer.Stemmer("english")
        docs = list(dict.fromkeys(d for _, d in pairs))
        row = {d: i for i, d in enumerate(docs)}
        index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        index.index(bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        out = np.zeros(len(pairs), dtype=np.float32)
        for query, positions in group_by_query(pairs).items():
            tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False,
                                    return_ids=False)[0]
            scores = index.get_scores(tokens)
            out[positions] = scores[[row[pairs[i][1]] for i in positions]]
        return out


@TEACHERS.register("fusion")
@dataclass
class FusionTeacher(ListTeacher):
    teachers: list[str] = field(default_factory=lambda: ["cross-encoder", "bi-encoder"])
    method: str = "rrf"
    weights: dict[str, float] = field(default_factory=dict)
    rrf_k: int = 60
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = "fusion"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"fusion: method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if len(self.teachers) < 2 or "fusion" in self.teachers:
            raise ConfigError("fusion: teachers must name at least two other teachers")
        unknown = sorted(set(self.weights) - set(self.teachers))
        if unknown:
            raise ConfigError(f"fusion: weights for teachers it does not use: {', '.join(unknown)}")
        self.components = [TEACHERS.get(name)(**self.options.get(name, {})) for name in self.teachers]

    def score_all(self, pairs: Sequence[tuple[str, str]], cache_dir: str | Path | None) -> np.ndarray:
        pairs = list(pairs)
        columns = [score_pairs_cached(teacher, pairs, cache_dir) for teacher in self.components]
        out = np.zeros(len(pairs), dtype=np.float64)
        for positions in group_by_query(pairs).values():
            for name, scores in zip(self.teachers, columns, strict=True):
                out[positions] += self.weights.get(name, 1.0) * self._combine(scores[positions].astype(np.float64))
        return out.astype(np.float32)

    def _combine(self, scores: np.ndarray) -> np.ndarray:
        if self.method == "rrf":
            ranks = np.empty(len(scores))
            ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
            return 1.0 / (self.rrf_k + ranks)
        std = scores.std()
        return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
