"""Semantic textual similarity: Spearman correlation (x100) of cosine similarity with the gold scores.

The data is read from the raw distributions, as MTEB uses them (not SentEval's tokenized copies):

- ``sts/stsbenchmark/sts-{train,dev,test}.csv``: tab-separated, score in column 5, sentences in 6 and 7
  (some lines carry two extra source columns; the text is never quoted, so no CSV parsing).
- ``sts/sick2014/SICK_{train,trial,test_annotated}.txt``: header, ``pair_ID, sentence_A, sentence_B,
  relatedness_score, ...`` (the test file has CRLF line endings).
- ``sts/semeval_raw/STS12..STS16``: ``STS[2016].input.<subset>.txt`` (``s1<TAB>s2[<TAB>source1<TAB>source2]``)
  next to ``STS[2016].gs.<subset>.txt``; a blank gold line is an unscored pair and is skipped. Each
  year is the union of its subsets, as in MTEB's STS12..STS16 (test split only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densekit.errors import ConfigError, DataError

STS_TASKS: list[str] = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16"]
SEMEVAL_YEARS = {"STS12", "STS13", "STS14", "STS15", "STS16"}
SICK_FILES = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "dev": "SICK_trial.txt",
              "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "dev": "sts-dev.csv",
              "test": "sts-test.csv"}

Pair = tuple[str, str, float]


def default_sts_data_dir() -> Path:
    """The first data folder (``$DENSEKIT_DATA``, ``../shared/data`` of the working directory or of the checkout,
    ``~/.cache/densekit/data``) that holds ``sts/``."""
    from densekit.data.beir import default_data_dirs

    dirs = default_data_dirs()
    return next((d for d in dirs if (d / "sts").is_dir()), dirs[0])


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError("STS file not found", path=str(path))
    with open(path, encoding="utf-8", newline="") as handle:
        return [line.rstrip("\n").rstrip("\r") for line in handle]


def _score(value: str, path: Path, lineno: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"score '{value}' is not a number", path=str(path), line=lineno,
                        field="score") from None


def _read_stsb(path: Path) -> list[Pair]:
    pairs = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise DataError(f"expected at least 7 tab-separated fields, found {len(fields)}", path=str(path),
                            line=lineno)
        pairs.append((fields[5], fields[6], _score(fields[4], path, lineno)))
    return pairs


def _read_sick(path: Path) -> list[Pair]:
    lines = _read_lines(path)
    header = lines[0].split("\t") if lines else []
    try:
        a, b, s = (header.index(name) for name in ("sentence_A", "sentence_B", "relatedness_score"))
    except ValueError:
        raise DataError("header must name sentence_A, sentence_B and relatedness_score", path=str(path),
                        line=1) from None
    pairs = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= max(a, b, s):
            raise DataError(f"expected {len(header)} tab-separated fields, found {len(fields)}",
                            path=str(path), line=lineno)
        pairs.append((fields[a], fields[b], _score(fields[s], path, lineno)))
    return pairs


def _read_semeval(folder: Path) -> list[Pair]:
    inputs = sorted(folder.glob("STS*.input.*.txt"))
    if not inputs:
        raise DataError("no STS*.input.*.txt files", path=str(folder))
    pairs = []
    for input_path in inputs:
        gold_path = input_path.with_name(input_path.name.replace(".input.", ".gs."))
        texts, gold = _read_lines(input_path), _read_lines(gold_path)
        if len(texts) != len(gold):
            raise DataError(f"{len(texts)} sentence pairs but {len(gold)} gold lines in {gold_path.name}",
                            path=str(input_path))
        for lineno, (text_line, gold_line) in enumerate(zip(texts, gold, strict=True), start=1):
            if not gold_line.strip():
                continue  # unscored pair
            fields = text_line.split("\t")
            if len(fields) < 2:
                raise DataError("expected two tab-separated sentences", path=str(input_path), line=lineno)
            pairs.append((fields[0], fields[1], _score(gold_line.strip(), gold_path, lineno)))
    return pairs


def _split_file(table: dict[str, str], split: str, what: str) -> str:
    if split not in table:
        raise ConfigError(f"{what} has no split '{split}' (known: {', '.join(table)})")
    return table[split]


def load_sts_folder(folder: str | Path, split: str = "test") -> list[Pair]:
    """Pairs from a folder in one of the three raw layouts: STS Benchmark (``sts-<split>.csv``),
    SICK (``SICK_*.txt``) or SemEval (``STS*.input.<subset>.txt`` + ``STS*.gs.<subset>.txt``, test only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("STS folder not found", path=str(folder))
    if any(folder.glob("sts-*.csv")):
        return _read_stsb(folder / _split_file(STSB_FILES, split, f"STS Benchmark folder {folder}"))
    if any(folder.glob("SICK_*.txt")):
        return _read_sick(folder / _split_file(SICK_FILES, split, f"SICK folder {folder}"))
    if any(folder.glob("STS*.input.*.txt")):
        if split != "test":
            raise ConfigError(f"SemEval STS folder {folder} has only a test split, not '{split}'")
        return _read_semeval(folder)
    raise DataError("not an STS folder: expected sts-<split>.csv, SICK_*.txt or "
                    "STS*.input.*.txt + STS*.gs.*.txt", path=str(folder))


def sts_task_folder(task: str, data_dir: str | Path | None = None) -> Path:
    """Where the raw files of a named STS task live under the data folder."""
    root = Path(data_dir) if data_dir is not None else default_sts_data_dir()
    root = root / "sts" if (root / "sts").is_dir() else root
    if task == "STSBenchmark":
        return root / "stsbenchmark"
    if task == "SICK-R":
        return root / "sick2014"
    if task in SEMEVAL_YEARS:
        return root / "semeval_raw" / task
    raise ConfigError(f"unknown STS task '{task}' (known: {', '.join(STS_TASKS)})")


def load_sts(task: str, data_dir: str | Path | None = None, split: str = "test") -> list[Pair]:
    """``(sentence1, sentence2, gold score)`` pairs of one STS task; unscored pairs are left out."""
    folder = sts_task_folder(task, data_dir)
    if task in SEMEVAL_YEARS and split != "test":
        raise ConfigError(f"{task} has only a test split, not '{split}'")
    if not folder.is_dir():
        raise DataError(f"no data for STS task {task}", path=str(folder))
    return load_sts_folder(folder, split)


def spearman_x100(predicted: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, gold).statistic) * 100.0


def cosine_scores(model, pairs: list[Pair], batch_size: int = 128, show_progress: bool = False) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is encoded once."""
    from densekit.models import encode

    unique = list(dict.fromkeys(s for a, b, _ in pairs for s in (a, b)))
    position = {sentence: i for i, sentence in enumerate(unique)}
    emb = encode(model, unique, batch_size=batch_size, show_progress=show_progress)
    left = emb[[position[a] for a, _, _ in pairs]]
    right = emb[[position[b] for _, b, _ in pairs]]
    return np.einsum("ij,ij->i", left, right)


def evaluate_sts(model, tasks: list[str] | None = None, data_dir: str | Path | None = None,
                 batch_size: int = 128, split: str = "test") -> dict[str, float]:
    """Spearman x 100 of cosine similarity per task, plus ``avg`` over them.

    ``model`` is a loaded SentenceTransformer or a name/folder for :func:`densekit.models.load_model`.
    """
    from tqdm.auto import tqdm

    if isinstance(model, str | Path):
        from densekit.models import load_model

        model = load_model(str(model))
    tasks = list(tasks) if tasks else list(STS_TASKS)
    results: dict[str, float] = {}
    for task in tqdm(tasks, desc="STS", disable=len(tasks) < 2):
        pairs = load_sts(task, data_dir, split)
        if len(pairs) < 2:
            raise DataError(f"{task}: fewer than two scored pairs")
        predicted = cosine_scores(model, pairs, batch_size=batch_size)
        results[task] = spearman_x100(predicted, np.array([g for _, _, g in pairs]))
    results["avg"] = float(np.mean([results[t] for t in tasks]))
    return results
