"""Training files: one typed record, one reader.

What ``densekit mine`` writes and ``densekit train`` reads is a JSONL of :class:`TrainingRecord`::

    {"query_id": "...", "query": "...", "positive_id": "...", "positive": "...",
     "negatives": [{"doc_id", "text", "source", "rank", "score", "teacher_score"?, "weight"?, "cluster"?}, ...],
     "positive_teacher_score"?, "teacher"?, "teacher_disagrees"?, "refilled"?, "query_cluster"?,
     "dropped"?: [{"doc_id", "source", "rank", "teacher_score", "reason"}]}

Hand-made files may be simpler: ``anchor`` is accepted for ``query``, negatives may be plain strings, and the
ids are optional (the dynamic training modes need them). A Hugging Face ``datasets`` folder, parquet file or hub
name with ``anchor``/``query``, ``positive`` and ``negative``/``negative_*`` columns is read into the same
records. Every error names the file, the line (or row) and the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from densekit.data.records import AUDIT_FIELDS, Negative, TrainingRecord
from densekit.errors import ConfigError, DataError
from densekit.io import read_jsonl

__all__ = ["AUDIT_FIELDS", "DATA_FORMATS", "Negative", "TrainingRecord", "read_training_data",
           "read_training_records", "to_hf_dataset"]
DATA_FORMATS = ("auto", "examples", "text", "nli-csv")

def _is_hf_disk_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def read_training_records(source: str | os.PathLike) -> list[TrainingRecord]:
    """Records from a JSONL file, a ``datasets`` folder saved with ``save_to_disk``, a parquet file or a hub name."""
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".gz", ".json"):
        records = [TrainingRecord.from_json(obj, str(path), line) for line, obj in read_jsonl(path)]
    else:
        import datasets

        if _is_hf_disk_dataset(path):
            ds = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        elif path.exists():
            raise DataError("not a JSONL file, parquet file or saved `datasets` folder", path=str(path))
        else:
            ds = datasets.load_dataset(str(source), split="train")
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"]
        records = [TrainingRecord.from_json(dict(row), str(path), i + 1) for i, row in enumerate(ds)]
    if not records:
        raise DataError("no training examples", path=str(path))
    return records


def read_training_data(path: str | os.PathLike, data_format: str = "auto") -> list[TrainingRecord]:
    """Records from any training file: ``text`` (one sentence a line -> ``(s, s)``), ``nli-csv``
    (``sent0,sent1,hard_neg``) or ``examples`` (JSONL / datasets); ``auto`` decides by the file extension."""
    from densekit.data import sentences

    if data_format not in DATA_FORMATS:
        raise ConfigError(f"unknown data format '{data_format}'; choose one of: {', '.join(DATA_FORMATS)}")
    if data_format == "auto":
        data_format = sentences.detect_format(path)
    if data_format == "text":
        return sentences.load_unlabeled_pairs(path)
    if data_format == "nli-csv":
        return sentences.load_nli_triplets(path)
    return read_training_records(path)


def to_hf_dataset(records: Iterable[TrainingRecord], num_negatives: int | None = None, row_index: bool = False):
    """Columns ``anchor, positive, negative_1..n`` as sentence-transformers' trainer expects, plus ``label`` (the
    row index, which id-aware losses and collators use to look a row up) when ``row_index`` is set.

    ``num_negatives`` defaults to the fewest any record has; a record with fewer than asked cycles through its
    own negatives, and one with none is an error when negatives are asked for.
    """
    import datasets

    records = list(records)
    if num_negatives is None:
        num_negatives = min(len(r.negatives) for r in records)
    columns: dict[str, list] = {"anchor": [], "positive": []}
    for i in range(num_negatives):
        columns[f"negative_{i + 1}"] = []
    for index, record in enumerate(records):
        if num_negatives and not record.negatives:
            raise DataError(f"training example {index + 1} has no negatives but {num_negatives} were asked for",
                            path=record.where, field="negatives")
        columns["anchor"].append(record.query)
        columns["positive"].append(record.positive)
        texts = record.negative_texts
        for i in range(num_negatives):
            columns[f"negative_{i + 1}"].append(texts[i % len(texts)])
    if row_index:
        columns["label"] = list(range(len(records)))
    return datasets.Dataset.from_dict(columns)
