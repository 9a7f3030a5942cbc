"""Hybrid candidates: BM25 and dense lists fused, by reciprocal rank or by normalised score.

Reciprocal rank fusion: Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet
and individual Rank Learning Methods", SIGIR 2009: ``score(d) = sum_r w_r / (rrf_k + rank_r(d))``.
``fusion="score"`` instead sums min-max normalised scores per query, weighted.

Each component retrieves ``depth_factor * k`` so that documents ranked just outside one list still
get credit from the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from densekit.errors import ConfigError
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.base import Candidates


def reciprocal_rank_fusion(lists: dict[str, list[tuple[str, float]]], weights: dict[str, float],
                           rrf_k: int = 60) -> list[tuple[str, float]]:
    fused: dict[str, float] = {}
    for name, ranked in lists.items():
        w = weights.get(name, 1.0)
        for rank, (doc, _) in enumerate(ranked, start=1):
            fused[doc] = fused.get(doc, 0.0) + w / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def score_fusion(lists: dict[str, list[tuple[str, float]]],
                 weights: dict[str, float]) -> list[tuple[str, float]]:
    fused: dict[str, float] = {}
    for name, ranked in lists.items():
        if not ranked:
            continue
        scores = [s for _, s in ranked]
        low, high = min(scores), max(scores)
        span = high - low or 1.0
        w = weights.get(name, 1.0)
        for doc, s in ranked:
            fused[doc] = fused.get(doc, 0.0) + w * (s - low) / span
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


@RETRIEVERS.register("hybrid")
@dataclass
class HybridRetriever:
    components: list[str] = field(default_factory=lambda: ["bm25", "dense"])
    fusion: str = "rrf"
    rrf_k: int = 60
    weights: dict[str, float] = field(default_factory=dict)
    depth_factor: int = 2
    # options per component, e.g. {"dense": {"model": ...}}; the miner fills them from the plain retrievers'
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = "hybrid"

    def __post_init__(self) -> None:
        if self.fusion not in ("rrf", "score"):
            raise ConfigError(f"hybrid: fusion must be 'rrf' or 'score', got '{self.fusion}'")
        if "hybrid" in self.components or len(self.components) < 2:
            raise ConfigError("hybrid: components must name at least two other retrievers")
        for name in self.components:
            RETRIEVERS.get(name)

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
        runs = {name: RETRIEVERS.get(name)(**self.options.get(name, {})).retrieve(queries, corpus,
                                                                                     k * self.depth_factor)
                for name in self.components}
        out: Candidates = {}
        for qid in queries:
            lists = {name: run.get(qid, []) for name, run in runs.items()}
            fused = (reciprocal_rank_fusion(lists, self.weights, self.rrf_k) if self.fusion == "rrf"
                     else score_fusion(lists, self.weights))
            out[qid] = fused[:k]
        return out
