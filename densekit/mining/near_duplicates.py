"""A teacher-free filter for near-duplicates of a query's positives among its candidate negatives.

Exact copies of a positive are excluded by their text; near-copies are what scraped corpora are full of (the same
abstract without its title, a version with one sentence more) and are mined as "hard negatives" by every
retriever, because they *are* the positive. A teacher does not reliably catch them either: on SciFact the ms-marco
cross-encoder scores such copies at 88-91% of the positive, below a TopK-PercPos 0.95 cut.

Each text becomes its set of word 3-gram shingles (lower-cased ``\\w+`` tokens); a candidate is a near-duplicate
of a positive when their overlap coefficient ``|A & B| / min(|A|, |B|)`` reaches ``threshold`` (0.8 by default):
most of the shorter text lies inside the longer one, whichever way round. Topically related abstracts share a
few percent of their 3-grams; a copy missing its title and last sentence shares all of its own. The comparison is
exact, per query, against that query's few positives, so it costs a set intersection per candidate and needs no
MinHash index even on a corpus of millions (MinHash/LSH is for finding duplicates across a whole corpus, which
mining never has to do).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TOKENS = re.compile(r"\w+")
DEFAULT_THRESHOLD = 0.8


@lru_cache(maxsize=262144)
def shingles(text: str, n: int = 3) -> frozenset[int]:
    """The hashed word ``n``-grams of ``text`` (a text shorter than ``n`` words is one shingle)."""
    tokens = _TOKENS.findall(text.lower())
    if len(tokens) < n:
        return frozenset({hash(tuple(tokens))}) if tokens else frozenset()
    return frozenset(hash(tuple(tokens[i:i + n])) for i in range(len(tokens) - n + 1))


def overlap(a: frozenset[int], b: frozenset[int]) -> float:
    """The overlap coefficient: the share of the smaller set that is in the other."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


class NearDuplicateFilter:
    """``near_duplicate_of(text, positives)``: the overlap with the closest positive when it reaches the
    threshold, else None."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold

    def near_duplicate_of(self, text: str, positive_texts: set[str]) -> float | None:
        candidate = shingles(text)
        best = max((overlap(candidate, shingles(p)) for p in positive_texts), default=0.0)
        return round(best, 4) if best >= self.threshold else None


def near_duplicate_drop(cand: Any, similar: float) -> dict:
    """The audit entry of a candidate left out as a near-duplicate of a positive."""
    return {"doc_id": cand.doc_id, "source": cand.source, "rank": cand.rank, "overlap": similar,
            "reason": "near_duplicate"}
