"""Rescoring a query's candidate pool with the teacher: drop likely false negatives (the filters of
:class:`~densekit.mining.denoise.DenoiseConfig`), keep each candidate's teacher score, and top up a query the
filters left short from the next candidates of its window (``refill``)."""

from __future__ import annotations

import logging
from dataclasses import replace
from itertools import zip_longest

import numpy as np

from densekit.data.beir import doc_text
from densekit.data.records import Negative
from densekit.mining.denoise import DenoiseConfig, drop_reasons, soft_weights
from densekit.mining.near_duplicates import NearDuplicateFilter, near_duplicate_drop
from densekit.mining.samplers.window import Candidate
from densekit.mining.teachers import score_pairs_cached

logger = logging.getLogger(__name__)


def rounded(score: float | None) -> float | None:
    return None if score is None else round(float(score), 6)


def pool_item(candidate: Candidate, corpus: dict, doc_clusters: dict[str, int]) -> Negative:
    """A candidate as it enters a query's pool: with its text and, from the ivf-local retriever, its cluster."""
    return Negative(text=doc_text(corpus[candidate.doc_id]), doc_id=candidate.doc_id, source=candidate.source,
                    rank=candidate.rank, score=candidate.score, cluster=doc_clusters.get(candidate.doc_id))


def next_window_candidates(qid: str, ranked: dict[str, dict], positives: set[str], positive_texts: set[str],
                           corpus: dict, window: tuple[int, int], seen: set[str], n: int,
                           doc_clusters: dict[str, int], near_duplicates: NearDuplicateFilter | None = None,
                           near_dropped: dict[str, dict] | None = None) -> list[Negative]:
    """Up to ``n`` unseen candidates of the query's window, best rank first, the retrievers interleaved."""
    lists = [[Candidate(doc, rounded(score), rank, name)
              for rank, (doc, score) in enumerate(cands.get(qid, []), start=1)
              if window[0] <= rank <= window[1] and doc not in positives]
             for name, cands in ranked.items()]
    out: list[Negative] = []
    for group in zip_longest(*lists):
        for cand in group:
            if cand is None or cand.doc_id in seen or doc_text(corpus[cand.doc_id]) in positive_texts:
                continue
            seen.add(cand.doc_id)
            if near_duplicates is not None:
                similar = near_duplicates.near_duplicate_of(doc_text(corpus[cand.doc_id]), positive_texts)
                if similar is not None:
                    if near_dropped is not None:
                        near_dropped.setdefault(cand.doc_id, near_duplicate_drop(cand, similar))
                    continue
            out.append(pool_item(cand, corpus, doc_clusters))
            if len(out) == n:
                return out
    return out


def refill_short_pools(queries: dict[str, str], positives: dict[str, set[str]], pos_texts: dict[str, set[str]],
                       corpus: dict, ranked: dict[str, dict], doc_clusters: dict[str, int],
                       pools: dict[str, list[Negative]], extras: dict[str, dict], denoise: DenoiseConfig,
                       num_negatives: int, window: tuple[int, int], cache_dir: str | None,
                       near_duplicates: NearDuplicateFilter | None = None,
                       near_dropped: dict[str, dict[str, dict]] | None = None) -> None:
    """Top up, in place, the pools that denoising left with fewer than ``num_negatives``."""
    chunk = num_negatives * denoise.oversample
    seen = {qid: {n.doc_id for n in pools[qid]} | {d["doc_id"] for d in extras[qid].get("dropped", [])}
            for qid in queries}
    rounds = 0
    teacher = denoise.build_teacher()
    while True:
        short = [qid for qid in queries if len(pools[qid]) < num_negatives
                 and extras[qid].get("teacher_ranks_positive_first") is not False]
        fresh = {qid: next_window_candidates(qid, ranked, positives[qid], pos_texts[qid], corpus, window,
                                             seen[qid], chunk, doc_clusters, near_duplicates,
                                             near_dropped[qid] if near_dropped is not None else None)
                 for qid in short}
        fresh = {qid: cands for qid, cands in fresh.items() if cands}
        if not fresh:
            break
        rounds += 1
        subset = {qid: queries[qid] for qid in fresh}
        kept, new_extras = denoise_pools(subset, {q: positives[q] for q in fresh}, corpus, fresh, denoise,
                                         num_negatives, cache_dir, teacher=teacher, log=False)
        for qid in fresh:
            pools[qid] = pools[qid] + kept[qid]
            extras[qid]["refilled"] = extras[qid].get("refilled", 0) + len(fresh[qid])
            if new_extras[qid].get("dropped"):
                extras[qid]["dropped"] = extras[qid].get("dropped", []) + new_extras[qid]["dropped"]
    still = sum(1 for qid in queries if len(pools[qid]) < num_negatives)
    if rounds or still:
        logger.warning("refilled short queries from their windows in %d round(s); %d still have fewer than %d "
                       "negatives (window exhausted: widen --window)", rounds, still, num_negatives)


def denoise_pools(queries: dict[str, str], positives: dict[str, set[str]], corpus: dict,
                  pools: dict[str, list[Negative]], cfg: DenoiseConfig, num_negatives: int, cache_dir: str | None,
                  teacher=None, log: bool = True) -> tuple[dict[str, list[Negative]], dict[str, dict]]:
    """Rescore each query's positives and candidate pool with the teacher and drop likely false negatives."""
    teacher = teacher or cfg.build_teacher()
    pairs: list[tuple[str, str]] = []
    for qid, query in queries.items():
        pairs += [(query, doc_text(corpus[p])) for p in sorted(positives[qid])]
        pairs += [(query, neg.text) for neg in pools[qid]]
    scores = score_pairs_cached(teacher, pairs, cache_dir)
    kept_pools: dict[str, list[Negative]] = {}
    extras: dict[str, dict] = {}
    at = 0
    n_dropped = n_untrusted = 0
    for qid in queries:
        n_pos, n_neg = len(positives[qid]), len(pools[qid])
        pos_scores = scores[at:at + n_pos]
        neg_scores = scores[at + n_pos:at + n_pos + n_neg]
        at += n_pos + n_neg
        pos_score = float(pos_scores.min())
        if cfg.positive_first and n_neg and float(neg_scores.max()) >= pos_score:
            # the teacher ranks some candidate at or above the positive: the query is not trusted at all
            kept_pools[qid], extras[qid] = [], {"positive_teacher_score": round(pos_score, 6), "teacher": teacher.name,
                                                "teacher_ranks_positive_first": False}
            n_untrusted += 1
            continue
        disagrees = cfg.min_positive_score is not None and pos_score < cfg.min_positive_score
        if disagrees:
            reasons = drop_reasons(neg_scores, pos_score, max_score=cfg.max_score)
        else:
            reasons = drop_reasons(neg_scores, pos_score, cfg.absolute_margin, cfg.perc_pos, cfg.max_score)
        weights = None
        if cfg.soft_weights:  # an untrusted teacher does not down-weight anything either
            weights = np.ones(n_neg) if disagrees else soft_weights(neg_scores, pos_score, cfg.soft_start)
        kept, dropped = [], []
        for i, (neg, s, reason) in enumerate(zip(pools[qid], neg_scores, reasons, strict=True)):
            item = replace(neg, teacher_score=round(float(s), 6))
            if reason is not None:
                dropped.append({"doc_id": neg.doc_id, "source": neg.source, "rank": neg.rank,
                                "teacher_score": item.teacher_score, "reason": reason})
                continue
            if weights is not None:
                item.weight = round(float(weights[i]), 6)
            kept.append(item)
        n_dropped += len(dropped)
        kept_pools[qid] = kept
        extras[qid] = {"positive_teacher_score": round(pos_score, 6), "teacher": teacher.name}
        if disagrees:
            extras[qid]["teacher_disagrees"] = True
        if dropped:
            extras[qid]["dropped"] = dropped
    if not log:
        return kept_pools, extras
    logger.info("denoising with %s dropped %d of %d candidates", teacher.name, n_dropped,
                sum(len(p) for p in pools.values()))
    if n_untrusted:
        logger.info("%d queries left out: the teacher does not rank their positive first", n_untrusted)
    short = sum(1 for qid in queries if len(kept_pools[qid]) < num_negatives)
    if short and not cfg.refill:
        logger.warning("%d queries have fewer than %d negatives after denoising "
                       "(raise oversample or widen the window)",
                       short, num_negatives)
    return kept_pools, extras
