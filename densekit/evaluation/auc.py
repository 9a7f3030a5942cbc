"""ROC AUC diagnostics: how well do a model's scores separate relevant from non-relevant documents?

nDCG only looks at the order within each query. The MW-loss paper (Mann-Whitney U loss for dense
retrieval) argues that a retriever should also be judged on how its raw scores separate relevant
from non-relevant pairs *across* queries, since that is what lets one threshold work for every
query. So we report both:

- ``global_auc``: ROC AUC over the pooled (query, document) scores of all queries;
- ``per_query_auc``: the ROC AUC within each query, and its mean/median over queries.

AUC here is the Mann-Whitney statistic: P(score of a relevant pair > score of a non-relevant pair),
ties counted one half. Relevant means a judgment >= 1 (as in the metrics); queries with no relevant
or no non-relevant document have no per-query AUC and are counted in ``queries_without_auc``.

Score samples (``scores.npz``) hold, per query, the scores of all its judged-relevant documents and
of a uniform random sample of the other documents (the whole rest of the corpus when it is small),
which gives an unbiased AUC without storing a queries x corpus matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densekit.errors import DataError
from densekit.io import atomic_open


@dataclass
class ScoreSamples:
    """Per-query scores of relevant (``positives``) and non-relevant (``negatives``) documents."""

    query_ids: list[str]
    positives: list[np.ndarray]
    negatives: list[np.ndarray]
    source: str = "corpus sample"  # or "run top-k" when only a run file was available

    def save(self, path: str | Path) -> None:
        pos_offsets = np.cumsum([0] + [len(p) for p in self.positives])
        neg_offsets = np.cumsum([0] + [len(n) for n in self.negatives])
        with atomic_open(path, "wb") as handle:
            np.savez_compressed(
                handle, query_ids=np.array(self.query_ids, dtype=str), source=np.array(self.source),
                positives=np.concatenate(self.positives or [np.zeros(0)]).astype(np.float32),
                negatives=np.concatenate(self.negatives or [np.zeros(0)]).astype(np.float32),
                pos_offsets=pos_offsets, neg_offsets=neg_offsets)

    @classmethod
    def load(cls, path: str | Path) -> ScoreSamples:
        try:
            with np.load(path, allow_pickle=False) as data:
                pos, neg, po, no = (data[k] for k in ("positives", "negatives", "pos_offsets", "neg_offsets"))
                return cls(query_ids=[str(q) for q in data["query_ids"]], source=str(data["source"]),
                           positives=[pos[po[i]:po[i + 1]] for i in range(len(po) - 1)],
                           negatives=[neg[no[i]:no[i + 1]] for i in range(len(no) - 1)])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"not a densekit scores.npz file ({exc})", path=str(path)) from None

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        empty = [np.zeros(0, dtype=np.float32)]
        return np.concatenate(self.positives or empty), np.concatenate(self.negatives or empty)


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count 1/2); NaN when either side is empty."""
    from scipy.stats import rankdata

    n_pos, n_neg = len(positives), len(negatives)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positives, negatives]))
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    scores = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tps, fps = np.cumsum(labels)[last_of_tie], np.cumsum(1 - labels)[last_of_tie]
    tpr = np.r_[0.0, tps / max(len(positives), 1)]
    fpr = np.r_[0.0, fps / max(len(negatives), 1)]
    return fpr, tpr


def auc_summary(samples: ScoreSamples) -> dict:
    """``global_auc``, mean/median per-query AUC, and the per-query values."""
    triples = zip(samples.query_ids, samples.positives, samples.negatives, strict=True)
    per_query = {qid: roc_auc(p, n) for qid, p, n in triples}
    defined = np.array([v for v in per_query.values() if not np.isnan(v)])
    pos, neg = samples.pooled()
    return {
        "global_auc": roc_auc(pos, neg),
        "mean_per_query_auc": float(defined.mean()) if len(defined) else float("nan"),
        "median_per_query_auc": float(np.median(defined)) if len(defined) else float("nan"),
        "queries_with_auc": int(len(defined)),
        "queries_without_auc": int(len(per_query) - len(defined)),
        "num_positive_scores": int(len(pos)),
        "num_negative_scores": int(len(neg)),
        "score_source": samples.source,
        "per_query_auc": {q: (None if np.isnan(v) else v) for q, v in per_query.items()},
    }


def sample_scores(q_emb: np.ndarray, doc_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
                  qrels: dict[str, dict[str, int]], negatives_per_query: int = 1000, seed: int = 0,
                  batch: int = 256) -> ScoreSamples:
    """Inner-product scores of every relevant document and a uniform sample of the non-relevant ones."""
    rng = np.random.default_rng(seed)
    position = {d: i for i, d in enumerate(doc_ids)}
    positives, negatives = [], []
    for start in range(0, len(query_ids), batch):
        scores = q_emb[start:start + batch] @ doc_emb.T
        for row, qid in enumerate(query_ids[start:start + batch]):
            relevant = [position[d] for d, rel in qrels.get(qid, {}).items() if rel >= 1 and d in position]
            mask = np.ones(len(doc_ids), dtype=bool)
            mask[relevant] = False
            others = np.flatnonzero(mask)
            if len(others) > negatives_per_query:
                others = np.sort(rng.choice(others, negatives_per_query, replace=False))
            positives.append(scores[row, relevant].astype(np.float32))
            negatives.append(scores[row, others].astype(np.float32))
    return ScoreSamples(list(query_ids), positives, negatives)


def samples_from_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> ScoreSamples:
    """Scores as far as a run file has them: retrieved relevant vs retrieved non-relevant documents.

    Relevant documents the run did not retrieve have no score and are left out, so this AUC
    describes the top-k only; prefer ``scores.npz`` written by ``densekit eval``.
    """
    qids = [q for q in qrels if q in run]

    def scores(qid: str, relevant: bool) -> np.ndarray:
        judged = qrels[qid]
        values = [s for d, s in run[qid].items() if (judged.get(d, 0) >= 1) == relevant]
        return np.array(values, dtype=np.float32)

    positives = [scores(q, True) for q in qids]
    negatives = [scores(q, False) for q in qids]
    return ScoreSamples(qids, positives, negatives, source="run top-k")
