"""Sentence-level training data: unlabeled text lines (SimCSE-style) and NLI triplet CSV files.

- Unlabeled text: one sentence per line (``.txt``, optionally ``.gz``); blank lines are skipped. Each line
  ``s`` becomes the pair ``(s, s)``: the trainer embeds the two columns in separate forward passes, so the
  model's dropout makes them two views of the same sentence (unsupervised SimCSE, WhitenedCSE, DebCSE).
- NLI triplets: a CSV with a header naming ``sent0,sent1,hard_neg`` (SimCSE's ``nli_for_simcse.csv``):
  premise, entailment hypothesis (positive) and contradiction hypothesis (hard negative). A file with only
  ``sent0,sent1`` gives pairs without negatives.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from densekit.data.records import Negative, TrainingRecord
from densekit.errors import DataError
from densekit.io import read_lines

NLI_COLUMNS = ("sent0", "sent1", "hard_neg")


def load_unlabeled_pairs(path: str | os.PathLike, max_sentences: int | None = None) -> list[TrainingRecord]:
    """One ``(s, s)`` example per non-blank line."""
    examples = []
    for lineno, line in read_lines(path):
        sentence = line.strip()
        if sentence:
            examples.append(TrainingRecord(sentence, sentence, where=f"{path}:{lineno}"))
            if max_sentences is not None and len(examples) >= max_sentences:
                break
    if not examples:
        raise DataError("no sentences (the file is empty or blank)", path=str(path))
    return examples


def load_nli_triplets(path: str | os.PathLike) -> list[TrainingRecord]:
    """``sent0,sent1[,hard_neg]`` rows -> ``TrainingRecord(premise, entailment, [contradiction])``."""
    examples = []
    reader = csv.DictReader(text for _, text in read_lines(path))
    try:
        header = reader.fieldnames or []
        missing = [c for c in NLI_COLUMNS[:2] if c not in header]
        if missing:
            found = ", ".join(header) or "none"
            raise DataError(f"header has no column(s) {', '.join(missing)} (found: {found})",
                            path=str(path), line=1, field=missing[0])
        has_negative = "hard_neg" in header
        for row in reader:
            lineno = reader.line_num
            for column in NLI_COLUMNS if has_negative else NLI_COLUMNS[:2]:
                if not (row.get(column) or "").strip():
                    raise DataError("empty or missing text", path=str(path), line=lineno, field=column)
            negatives = [Negative(row["hard_neg"])] if has_negative else []
            examples.append(TrainingRecord(row["sent0"], row["sent1"], negatives, where=f"{path}:{lineno}"))
    except csv.Error as exc:  # e.g. a field over csv's size limit; line_num counts the rows before the bad one
        raise DataError(f"not a readable CSV row ({exc})", path=str(path), line=reader.line_num + 1) from None
    if not examples:
        raise DataError("no triplets after the header", path=str(path))
    return examples


def detect_format(path: str | os.PathLike) -> str:
    """``text`` for .txt(.gz), ``nli-csv`` for .csv(.gz), else ``examples`` (JSONL / datasets)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        return "text"
    if name.endswith(".csv"):
        return "nli-csv"
    return "examples"
