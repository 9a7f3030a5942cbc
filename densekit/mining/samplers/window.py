"""Rank-window samplers: the ``n`` best candidates in the window, or ``n`` drawn at random from it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from densekit.mining.registry import SAMPLERS


class Candidate(NamedTuple):
    """A candidate negative: ``rank`` is 1-based in its retriever's list (None for a document drawn from outside
    it), ``source`` the retriever, or what else produced it (``random``)."""

    doc_id: str
    score: float | None
    rank: int | None
    source: str | None = None


@dataclass
class SampleContext:
    """What a sampler may need beyond the candidate list: the corpus ids and the ids it must not return."""
    corpus_ids: Sequence[str] = field(default_factory=list)
    exclude: set[str] = field(default_factory=set)


def in_window(candidates: list[Candidate], window: tuple[int, int]) -> list[Candidate]:
    low, high = window
    return [c for c in candidates if c.rank is not None and low <= c.rank <= high]


@SAMPLERS.register("top")
def sample_top(candidates: list[Candidate], n: int, window: tuple[int, int], rng: random.Random,
               context: SampleContext | None = None) -> list[Candidate]:
    return in_window(candidates, window)[:n]


@SAMPLERS.register("random-in-window")
def sample_random(candidates: list[Candidate], n: int, window: tuple[int, int],
                  rng: random.Random, context: SampleContext | None = None) -> list[Candidate]:
    pool = in_window(candidates, window)
    picked = rng.sample(pool, min(n, len(pool)))
    return sorted(picked, key=lambda c: c.rank)
