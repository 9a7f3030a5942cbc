"""Training rows that know their query and documents, for the dynamic modes (ANCE, STAR, ADORE).

The static trainer only sees texts. The dynamic modes need ids: ANCE swaps in new negatives per query,
STAR masks in-batch documents that are relevant to another query, ADORE labels retrieved documents from
the qrels. Each row carries its index as the ``label`` column (sentence-transformers passes it to the loss
as ``labels``), and :class:`TrainingRows` maps that index back to the query, its positive and its qrels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from densekit.data.beir import BeirDataset, doc_text
from densekit.errors import DataError
from densekit.io import read_jsonl


@dataclass
class TrainingRows:
    query_ids: list[str]
    queries: list[str]
    positive_ids: list[str]
    positives: list[str]
    relevant: dict[str, set[str]]  # query id -> every judged relevant document id
    negative_ids: list[list[str]] = field(default_factory=list)
    negatives: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.query_ids)

    def head(self, n: int | None) -> TrainingRows:
        """The first ``n`` rows (all when ``n`` is falsy); the qrels are kept whole."""
        if not n:
            return self
        return TrainingRows(self.query_ids[:n], self.queries[:n], self.positive_ids[:n], self.positives[:n],
                            self.relevant, self.negative_ids[:n], self.negatives[:n])


def rows_from_mined(path: str, dataset: BeirDataset) -> TrainingRows:
    """Rows of a ``densekit mine`` JSONL (which records ``query_id`` and ``positive_id``) with the split's qrels."""
    relevant = {q: {d for d, rel in docs.items() if rel >= 1} for q, docs in dataset.qrels.items()}
    rows = TrainingRows([], [], [], [], relevant)
    for lineno, obj in read_jsonl(path):
        for key in ("query_id", "positive_id", "query", "positive"):
            if key not in obj:
                raise DataError("the dynamic training modes need mined records (densekit mine output)",
                                path=path, line=lineno, field=key)
        qid, pid = str(obj["query_id"]), str(obj["positive_id"])
        if pid not in dataset.corpus:
            raise DataError(f"positive '{pid}' is not in the corpus of {dataset.path}", path=path, line=lineno,
                            field="positive_id")
        rows.query_ids.append(qid)
        rows.queries.append(obj["query"])
        rows.positive_ids.append(pid)
        rows.positives.append(obj["positive"])
        negs = obj.get("negatives") or []
        rows.negative_ids.append([str(n["doc_id"]) for n in negs if isinstance(n, dict) and "doc_id" in n])
        rows.negatives.append([n["text"] if isinstance(n, dict) else n for n in negs])
        relevant.setdefault(qid, set()).add(pid)
    if not rows.query_ids:
        raise DataError("no training records", path=path)
    return rows


def rows_from_qrels(dataset: BeirDataset) -> TrainingRows:
    """One row per judged query (its first positive), for ADORE, which needs no mined negatives."""
    relevant = {q: {d for d, rel in docs.items() if rel >= 1} for q, docs in dataset.qrels.items()}
    rows = TrainingRows([], [], [], [], relevant)
    for qid, docs in relevant.items():
        if not docs or qid not in dataset.queries:
            continue
        pid = sorted(docs)[0]
        rows.query_ids.append(qid)
        rows.queries.append(dataset.queries[qid])
        rows.positive_ids.append(pid)
        rows.positives.append(doc_text(dataset.corpus[pid]))
    if not rows.query_ids:
        raise DataError(f"no judged query with a positive in split '{dataset.split}'", path=str(dataset.path))
    return rows


def to_row_dataset(rows: TrainingRows, columns: tuple[str, ...] = ("anchor", "positive"),
                   num_negatives: int = 0):
    """The trainer's columns (``anchor``[, ``positive``, ``negative_1..n``]) plus ``label`` = the row index."""
    import datasets

    from densekit.data.training import TrainingExample, to_hf_dataset

    if "positive" in columns:
        examples = [TrainingExample(q, p, negs) for q, p, negs in
                    zip(rows.queries, rows.positives, rows.negatives or [[]] * len(rows), strict=True)]
        dataset = to_hf_dataset(examples, num_negatives)
    else:
        dataset = datasets.Dataset.from_dict({"anchor": list(rows.queries)})
    return dataset.add_column("label", list(range(len(rows))))


class NegativeStore:
    """The current negatives per query; :meth:`swap` replaces them all at once (one reference assignment)."""

    def __init__(self, negatives: dict[str, list[str]], version: int = 0) -> None:
        self._lock = threading.Lock()
        self.negatives = negatives
        self.version = version

    def swap(self, negatives: dict[str, list[str]], version: int) -> dict[str, list[str]]:
        with self._lock:
            old, self.negatives, self.version = self.negatives, negatives, version
        return old

    def get(self, query_id: str) -> list[str]:
        return self.negatives.get(query_id, [])


class DynamicNegativesCollator:
    """Wraps sentence-transformers' collator: fills ``negative_1..n`` of each row from a :class:`NegativeStore`.

    The rows hold only ``anchor``, ``positive`` and ``label`` (the row index); the negatives are looked up when
    the batch is built, so a swap in the store takes effect from the next batch on without touching the
    dataset or the data loader.
    """

    def __init__(self, collator, store: NegativeStore, rows: TrainingRows, num_negatives: int,
                 texts: dict[str, str]) -> None:
        self.collator = collator
        self.store = store
        self.rows = rows
        self.num_negatives = num_negatives
        self.texts = texts  # document id -> text

    def __getattr__(self, name: str):  # the trainer reads e.g. valid_label_columns off its collator
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)

    def __call__(self, features: list[dict]) -> dict:
        filled = []
        for row in features:
            r = int(row["label"])
            neg_ids = self.store.get(self.rows.query_ids[r]) or self.rows.negative_ids[r]
            texts = [self.texts[d] for d in neg_ids] or self.rows.negatives[r]
            if not texts:
                raise DataError(f"query '{self.rows.query_ids[r]}' has no negatives", field="negatives")
            item = {"anchor": row["anchor"], "positive": row["positive"]}
            for i in range(self.num_negatives):
                item[f"negative_{i + 1}"] = texts[i % len(texts)]
            item["label"] = row["label"]
            filled.append(item)
        return self.collator(filled)
