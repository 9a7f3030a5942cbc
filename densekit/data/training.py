"""Training files: query / positive / negatives JSONL (what ``densekit mine`` writes) and HF datasets.

A JSONL record looks like::

    {"query": "...", "positive": "...", "negatives": ["...", {"text": "...", "weight": 0.8}, ...]}

``anchor`` is accepted for ``query``; negatives may be strings or objects with a ``text`` field
(the mined format, which also carries ``doc_id``, ``source``, ``rank`` and scores for auditing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from densekit.errors import DataError
from densekit.io import read_jsonl


@dataclass
class TrainingExample:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    weights: list[float] | None = None


def _text(value: object, path: str, lineno: int | None, name: str) -> str:
    if isinstance(value, dict):
        if "text" not in value:
            raise DataError("negative object has no 'text'", path=path, line=lineno, field=name)
        value = value["text"]
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", path=path, line=lineno, field=name)
    if not value.strip():
        raise DataError("empty text", path=path, line=lineno, field=name)
    return value


def example_from_record(obj: dict, path: str, lineno: int | None) -> TrainingExample:
    query_key = "query" if "query" in obj else "anchor" if "anchor" in obj else None
    if query_key is None:
        raise DataError("missing field (or 'anchor')", path=path, line=lineno, field="query")
    if "positive" not in obj:
        raise DataError("missing field", path=path, line=lineno, field="positive")
    query = _text(obj[query_key], path, lineno, query_key)
    positive = _text(obj["positive"], path, lineno, "positive")
    raw_negs = obj.get("negatives")
    if raw_negs is None:
        raw_negs = [obj[k] for k in sorted(obj) if k == "negative" or k.startswith("negative_")]
    if not isinstance(raw_negs, list):
        raise DataError("expected a list", path=path, line=lineno, field="negatives")
    negatives = [_text(n, path, lineno, f"negatives[{i}]") for i, n in enumerate(raw_negs)]
    weights = None
    if any(isinstance(n, dict) and "weight" in n for n in raw_negs):
        weights = [float(n.get("weight", 1.0)) if isinstance(n, dict) else 1.0 for n in raw_negs]
    return TrainingExample(query, positive, negatives, weights)


def _is_hf_disk_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def load_training_examples(source: str | os.PathLike) -> list[TrainingExample]:
    """Load from a JSONL file, a ``datasets`` folder saved with ``save_to_disk``, or a hub dataset name."""
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".gz", ".json"):
        examples = [example_from_record(obj, str(path), lineno) for lineno, obj in read_jsonl(path)]
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
        examples = [example_from_record(dict(row), str(path), i + 1) for i, row in enumerate(ds)]
    if not examples:
        raise DataError("no training examples", path=str(path))
    return examples


def to_hf_dataset(examples: list[TrainingExample], num_negatives: int | None = None):
    """Columns ``anchor, positive, negative_1..n`` as sentence-transformers' trainer expects.

    ``num_negatives`` defaults to the fewest any example has; an example with fewer than asked
    cycles through its own negatives, and one with none is an error when negatives are asked for.
    """
    import datasets

    if num_negatives is None:
        num_negatives = min(len(e.negatives) for e in examples)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    for i in range(num_negatives):
        columns[f"negative_{i + 1}"] = []
    for index, example in enumerate(examples):
        if num_negatives and not example.negatives:
            raise DataError(f"training example {index + 1} has no negatives but {num_negatives} were asked for",
                            field="negatives")
        columns["anchor"].append(example.query)
        columns["positive"].append(example.positive)
        for i in range(num_negatives):
            columns[f"negative_{i + 1}"].append(example.negatives[i % len(example.negatives)])
    return datasets.Dataset.from_dict(columns)
