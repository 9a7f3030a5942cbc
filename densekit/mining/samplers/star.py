"""STAR: static hard negatives mixed with random corpus negatives.

Zhan et al., "Optimizing Dense Retrieval Model Training with Hard Negatives", SIGIR 2021. STAR
trains on static hard negatives together with random negatives, which keeps training stable: hard
negatives alone over-fit to the mining model's mistakes, random ones alone are too easy.

``hard_ratio`` of the ``n`` negatives come from the rank window (best first, or at random with
``hard_sampling="random"``); the rest are drawn uniformly from the whole corpus, never a positive or a
document already picked. Random negatives carry ``source="random"`` and their rank in the retriever's
list when they happen to be in it (else ``None``).
"""

from __future__ import annotations

import random

from densekit.errors import ConfigError
from densekit.mining.registry import SAMPLERS
from densekit.mining.samplers.window import Candidate, SampleContext, in_window


@SAMPLERS.register("star")
def sample_star(candidates: list[Candidate], n: int, window: tuple[int, int], rng: random.Random,
                context: SampleContext | None = None, hard_ratio: float = 0.5,
                hard_sampling: str = "top") -> list[Candidate]:
    if not 0.0 <= hard_ratio <= 1.0:
        raise ConfigError(f"star: hard_ratio must be in [0, 1], got {hard_ratio}")
    if hard_sampling not in ("top", "random"):
        raise ConfigError(f"star: hard_sampling must be 'top' or 'random', got '{hard_sampling}'")
    if context is None or not context.corpus_ids:
        raise ConfigError("the star sampler needs the corpus ids (a SampleContext)")
    n_hard = int(round(n * hard_ratio))
    pool = in_window(candidates, window)
    hard = pool[:n_hard] if hard_sampling == "top" else sorted(rng.sample(pool, min(n_hard, len(pool))),
                                                             key=lambda c: c.rank)
    picked = {c.doc_id for c in hard}
    ranks = {c.doc_id: (c.score, c.rank) for c in candidates}
    randoms: list[Candidate] = []
    need = n - len(hard)
    max_tries = 20 * need + 100
    tries = 0
    while len(randoms) < need and tries < max_tries:
        tries += 1
        doc = context.corpus_ids[rng.randrange(len(context.corpus_ids))]
        if doc in picked or doc in context.exclude:
            continue
        picked.add(doc)
        score, rank = ranks.get(doc, (None, None))
        randoms.append(Candidate(doc, score, rank, "random"))
    return interleave(list(hard), randoms)


def interleave(hard: list, randoms: list) -> list:
    """Spread the random negatives evenly among the hard ones, so any prefix keeps about the same ratio
    (the miner merges several retrievers' lists and truncates)."""
    total = len(hard) + len(randoms)
    out, h, r = [], 0, 0
    for i in range(total):
        # take a hard one while hard ones are behind their share of the first i+1 slots
        if h < len(hard) and (r >= len(randoms) or h * total <= i * len(hard)):
            out.append(hard[h])
            h += 1
        else:
            out.append(randoms[r])
            r += 1
    return out
