"""IR metrics with trec_eval's semantics, so they equal pytrec_eval's on the same run.

- Ranking: by score descending, ties broken by document id descending (as trec_eval does).
- Relevant means a judgment >= 1; nDCG gains are the judgment values, discount log2(rank + 1).
- Averages are over the queries that appear both in the qrels and in the run (pytrec_eval's
  per-query output, averaged as BEIR does); ``num_queries`` says how many that was.
"""

from __future__ import annotations

import math

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
DEFAULT_KS = (1, 3, 5, 10, 100)


def rank_documents(scores: dict[str, float]) -> list[str]:
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], _Desc(item[0])))]


class _Desc:
    """Sort key wrapper that orders strings descending (trec_eval's tie-break on docno)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return self.value.encode() > other.value.encode()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value


def query_metrics(ranking: list[str], judged: dict[str, int],
                  ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    relevant = {doc for doc, rel in judged.items() if rel >= 1}
    n_rel = len(relevant)
    hits = [doc in relevant for doc in ranking]
    gains = [max(judged.get(doc, 0), 0) for doc in ranking]
    ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)
    out: dict[str, float] = {}

    precisions_at_hits = []
    found = 0
    for i, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precisions_at_hits.append((i, found / i))
    out["map"] = sum(p for _, p in precisions_at_hits) / n_rel if n_rel else 0.0
    first = next((i for i, hit in enumerate(hits, start=1) if hit), None)
    out["mrr"] = 1.0 / first if first else 0.0

    for k in ks:
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]) if g > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg_at_{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"recall_at_{k}"] = sum(hits[:k]) / n_rel if n_rel else 0.0
        out[f"precision_at_{k}"] = sum(hits[:k]) / k
        out[f"map_at_{k}"] = sum(p for i, p in precisions_at_hits if i <= k) / n_rel if n_rel else 0.0
        out[f"mrr_at_{k}"] = 1.0 / first if first and first <= k else 0.0
    return out


def evaluate_run(qrels: Qrels, run: Run, ks: tuple[int, ...] = DEFAULT_KS,
                 per_query: bool = False) -> dict:
    evaluated = [qid for qid in qrels if qid in run]
    totals: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    for qid in evaluated:
        metrics = query_metrics(rank_documents(run[qid]), qrels[qid], ks)
        per[qid] = metrics
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value
    n = len(evaluated)
    result: dict = {name: value / n for name, value in sorted(totals.items())} if n else {}
    result["num_queries"] = n
    if per_query:
        result["per_query"] = per
    return result


def write_trec_run(run: Run, path, tag: str = "densekit") -> None:
    from densekit.io import atomic_open

    with atomic_open(path, "w") as handle:
        for qid, scores in run.items():
            for rank, doc in enumerate(rank_documents(scores), start=1):
                handle.write(f"{qid} Q0 {doc} {rank} {scores[doc]:.6f} {tag}\n")


def read_trec_run(path) -> Run:
    from densekit.errors import DataError
    from densekit.io import open_text

    run: Run = {}
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise DataError(f"expected 6 columns (qid Q0 docid rank score tag), found {len(parts)}",
                                path=str(path), line=lineno)
            try:
                score = float(parts[4])
            except ValueError:
                raise DataError(f"score '{parts[4]}' is not a number", path=str(path), line=lineno,
                                field="score") from None
            run.setdefault(parts[0], {})[parts[2]] = score
    return run
