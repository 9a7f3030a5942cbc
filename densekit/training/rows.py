"""Training rows that know their query and documents, for the id-aware modes and losses (STAR, ANCE, ADORE).

The trainer only sees texts. The dynamic modes need ids: ANCE swaps in new negatives per query, STAR masks
in-batch documents that are relevant to another query, ADORE labels retrieved documents from the qrels. Each
row carries its index as the ``label`` column (sentence-transformers passes it to the loss as ``labels``), and
:class:`TrainingRows` maps that index back to its :class:`~densekit.data.training.TrainingRecord` and the qrels.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from densekit.data.beir import BeirDataset, doc_text
from densekit.data.training import TrainingRecord
from densekit.errors import DataError


@dataclass
class TrainingRows:
    records: list[TrainingRecord]
    relevant: dict[str, set[str]]  # query id -> every judged relevant document id
    store: NegativeStore | None = None  # ANCE: the negatives (and teacher scores) now trained on

    def __len__(self) -> int:
        return len(self.records)

    def query_id(self, row: int) -> str:
        return self.records[row].query_id or ""

    def positive_id(self, row: int) -> str:
        return self.records[row].positive_id or ""

    def negative_ids(self, row: int) -> list[str]:
        """The row's negatives as training now sees them: the refreshed ones under ANCE, else the mined ones."""
        if self.store is not None and self.store.get(self.query_id(row)):
            return self.store.get(self.query_id(row))
        return self.records[row].negative_ids

    def relevant_to(self, row: int) -> set[str]:
        """The documents a row's query must not be pushed away from: its judged relevant ones and its positive."""
        return self.relevant.get(self.query_id(row), set()) | {self.positive_id(row)}

    def teacher_scores(self, row: int, negatives: int) -> list[float]:
        """The teacher's scores of a row's positive and of its first ``negatives`` negatives (cycled as the
        training columns cycle them); a record without them is a DataError naming it."""
        if self.store is not None and self.store.version > 0 and self.store.get(self.query_id(row)):
            refreshed = self.store.teacher_scores(self.query_id(row), self.positive_id(row), negatives)
            if refreshed is None:
                raise DataError("the refreshed negatives have no teacher scores: distillation under --mode ance "
                                "needs --refresh-teacher", field="negatives")
            return refreshed
        record = self.records[row]
        positive = record.audit.get("positive_teacher_score")
        scores = [n.teacher_score for n in record.negatives]
        if positive is None or not scores or any(s is None for s in scores):
            raise DataError("distillation needs the teacher's score of the positive and of every negative: mine "
                            "with --teacher (the filters are optional)", path=record.where,
                            field="positive_teacher_score" if positive is None else "negatives[].teacher_score")
        return [float(positive)] + [float(scores[c % len(scores)]) for c in range(negatives)]

    def head(self, n: int | None) -> TrainingRows:
        """The first ``n`` rows (all when ``n`` is falsy); the qrels are kept whole."""
        return self if not n else TrainingRows(self.records[:n], self.relevant, self.store)


def judged_relevant(dataset: BeirDataset) -> dict[str, set[str]]:
    return {q: {d for d, rel in docs.items() if rel >= 1} for q, docs in dataset.qrels.items()}


def rows_from_records(records: list[TrainingRecord], dataset: BeirDataset) -> TrainingRows:
    """Rows of mined records (which carry ``query_id`` and ``positive_id``), checked against the dataset."""
    relevant = judged_relevant(dataset)
    for record in records:
        for name in ("query_id", "positive_id"):
            if getattr(record, name) is None:
                raise DataError("the dynamic training modes need mined records (densekit mine output)",
                                path=record.where, field=name)
        if record.positive_id not in dataset.corpus:
            raise DataError(f"positive '{record.positive_id}' is not in the corpus of {dataset.path}",
                            path=record.where, field="positive_id")
        relevant.setdefault(record.query_id, set()).add(record.positive_id)
    return TrainingRows(records, relevant)


def rows_from_qrels(dataset: BeirDataset) -> TrainingRows:
    """One row per judged query (its first positive), for ADORE, which needs no mined negatives."""
    relevant = judged_relevant(dataset)
    records = []
    for qid, docs in relevant.items():
        if not docs or qid not in dataset.queries:
            continue
        pid = sorted(docs)[0]
        records.append(TrainingRecord(dataset.queries[qid], doc_text(dataset.corpus[pid]), query_id=qid,
                                      positive_id=pid))
    if not records:
        raise DataError(f"no judged query with a positive in split '{dataset.split}'", path=str(dataset.path))
    return TrainingRows(records, relevant)


class NegativeStore:
    """The current negatives per query (and, when the refresh had a teacher, its scores of them and of the
    query's positives); :meth:`swap` replaces them all at once (one reference assignment)."""

    def __init__(self, negatives: dict[str, list[str]], version: int = 0) -> None:
        self._lock = threading.Lock()
        self.negatives = negatives
        self.scores: dict[str, dict[str, dict]] = {}
        self.version = version

    def swap(self, negatives: dict[str, list[str]], version: int,
             scores: dict[str, dict[str, dict]] | None = None) -> dict[str, list[str]]:
        with self._lock:
            old, self.negatives, self.scores, self.version = self.negatives, negatives, scores or {}, version
        return old

    def get(self, query_id: str) -> list[str]:
        return self.negatives.get(query_id, [])

    def teacher_scores(self, query_id: str, positive_id: str, negatives: int) -> list[float] | None:
        """The teacher's scores of the query's positive and its current negatives (cycled), if the last refresh
        had a teacher; else None."""
        entry = self.scores.get(query_id)
        docs = self.get(query_id)
        if not entry or not docs or entry["positives"].get(positive_id) is None:
            return None
        negative_scores = [entry["negatives"].get(d) for d in docs]
        if any(s is None for s in negative_scores):
            return None
        return [float(entry["positives"][positive_id])] + [float(negative_scores[c % len(docs)])
                                                           for c in range(negatives)]


@dataclass
class DynamicNegativesCollator(SentenceTransformerDataCollator):
    """sentence-transformers' collator that fills ``negative_1..n`` of each row from a :class:`NegativeStore`.

    The rows hold only ``anchor``, ``positive`` and ``label`` (the row index); the negatives are looked up when
    the batch is built, so a swap in the store takes effect from the next batch on without touching the
    dataset or the data loader.
    """

    store: NegativeStore | None = None
    rows: TrainingRows | None = None
    num_negatives: int = 1
    texts: Mapping[str, str] | None = None  # document id -> text

    def fill(self, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        filled = []
        for row in features:
            r = int(row["label"])
            record = self.rows.records[r]
            neg_ids = self.store.get(record.query_id) or record.negative_ids
            texts = [self.texts[d] for d in neg_ids] or record.negative_texts
            if not texts:
                raise DataError(f"query '{record.query_id}' has no negatives", path=record.where, field="negatives")
            item = {"anchor": row["anchor"], "positive": row["positive"]}
            for i in range(self.num_negatives):
                item[f"negative_{i + 1}"] = texts[i % len(texts)]
            item["label"] = row["label"]
            filled.append(item)
        return filled

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return super().__call__(self.fill(features))
