"""Turn what a user names into an MTEB task: a local BEIR folder, a local STS folder or a built-in name.

- A BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``) becomes an
  ``AbsTaskRetrieval`` whose ``load_data`` reads the files with densekit's BEIR reader.
- An STS folder (STS Benchmark, SICK or SemEval layout, see :mod:`densekit.evaluation.sts`) becomes an
  ``AbsTaskSTS``.
- A built-in MTEB task name runs on MTEB's own data when it is in the local Hugging Face cache. Names of
  tasks densekit has locally (``STSBenchmark``, ``SICK-R``, ``STS12``..``STS16`` and BEIR datasets found under
  the data folder, e.g. ``SciFact``) otherwise run on the local copy under the built-in task's metadata,
  so the result file is named and shaped like the published one.
- Anything else fails at once with a :class:`~densekit.errors.DensekitError` (no network retries).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from densekit.errors import ConfigError, DataError, DensekitError

LOCAL_METADATA = {
    "reference": "https://github.com/densekit/densekit",
    "eval_langs": ["eng-Latn"],
    "category": "t2t",
    "modalities": ["text"],
    "date": None,
    "domains": None,
    "task_subtypes": None,
    "license": None,
    "annotations_creators": None,
    "dialect": None,
    "sample_creation": None,
    "bibtex_citation": None,
}


def task_name_for_folder(folder: Path) -> str:
    """A task name MTEB accepts, from a folder name (``beir/scifact`` -> ``scifact``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name) or "local"


def _metadata(name: str, task_type: str, main_score: str, split: str, folder: Path):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(name=name, type=task_type, main_score=main_score, eval_splits=[split],
                        description=f"Local {task_type} data read by densekit from {folder}",
                        dataset={"path": str(folder), "revision": "local"}, **LOCAL_METADATA)


def _retrieval_split_data(folder: Path, split: str) -> dict[str, Any]:
    from datasets import Dataset

    from densekit.data.beir import load_beir

    data = load_beir(folder, split)
    corpus = Dataset.from_dict({"id": list(data.corpus),
                                "title": [doc.get("title", "") for doc in data.corpus.values()],
                                "text": [doc.get("text", "") for doc in data.corpus.values()]})
    queries = Dataset.from_dict({"id": list(data.qrels), "text": [data.queries[q] for q in data.qrels]})
    return {"corpus": corpus, "queries": queries, "relevant_docs": data.qrels, "top_ranked": None}


def _retrieval_class(base: type, folder: Path, split: str, metadata=None) -> type:
    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"default": {split: _retrieval_split_data(folder, split)}}
        self.data_loaded = True

    attrs: dict[str, Any] = {"load_data": load_data, "local_folder": folder}
    if metadata is not None:
        attrs["metadata"] = metadata
    return type(f"Local{base.__name__}", (base,), attrs)


def beir_retrieval_task(folder: str | Path, split: str = "test", name: str | None = None):
    """An MTEB retrieval task over a BEIR-format folder (one eval split)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    folder = Path(folder)
    if not is_beir_folder(folder):
        raise DataError("not a BEIR folder: expected corpus.jsonl[.gz] and queries.jsonl[.gz]",
                        path=str(folder))
    if not (folder / "qrels" / f"{split}.tsv").exists():
        raise DataError(f"no qrels for split '{split}'", path=str(folder / "qrels" / f"{split}.tsv"))
    metadata = _metadata(name or task_name_for_folder(folder), "Retrieval", "ndcg_at_10", split, folder)
    return _retrieval_class(AbsTaskRetrieval, folder, split, metadata)()


def _sts_class(base: type, folder: Path, split: str, metadata=None) -> type:
    from densekit.evaluation.sts import load_sts_folder

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        if self.data_loaded:
            return
        pairs = load_sts_folder(folder, split)
        self.dataset = DatasetDict({split: Dataset.from_dict({"sentence1": [a for a, _, _ in pairs],
                                                              "sentence2": [b for _, b, _ in pairs],
                                                              "score": [s for _, _, s in pairs]})})
        self.data_loaded = True

    attrs: dict[str, Any] = {"load_data": load_data, "local_folder": folder}
    if metadata is not None:
        attrs["metadata"] = metadata
    return type(f"Local{base.__name__}", (base,), attrs)


def sts_folder_task(folder: str | Path, split: str = "test", name: str | None = None):
    """An MTEB STS task over a raw STS folder."""
    from mteb.abstasks.sts import AbsTaskSTS

    from densekit.evaluation.sts import load_sts_folder

    folder = Path(folder)
    scores = [s for _, _, s in load_sts_folder(folder, split)]  # validates early, with file/line errors
    metadata = _metadata(name or task_name_for_folder(folder), "STS", "cosine_spearman", split, folder)
    cls = _sts_class(AbsTaskSTS, folder, split, metadata)
    # min/max only rescale the gold scores, which leaves the correlations unchanged
    cls.min_score, cls.max_score = min(scores), max(scores)
    return cls()


def is_beir_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f"{stem}{ext}").exists() for stem in ("corpus",)
                                   for ext in (".jsonl", ".jsonl.gz"))


def _hf_cached(dataset: dict) -> bool:
    """Whether the hub dataset (at its pinned revision) is in the local Hugging Face cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    repo = Path(HF_HUB_CACHE) / f"datasets--{str(dataset.get('path', '')).replace('/', '--')}"
    revision = dataset.get("revision")
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return False
    if revision and (snapshots / revision).is_dir():
        return True
    ref = repo / "refs" / "main"
    return not revision and ref.exists() and (snapshots / ref.read_text().strip()).is_dir()


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub.constants import HF_HUB_OFFLINE

    offline_env = any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
                      for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if HF_HUB_OFFLINE or offline_env:
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _local_beir_copy(name: str, data_dir: str | Path | None) -> Path | None:
    from densekit.data.beir import default_data_dirs

    bases = ([Path(data_dir)] if data_dir is not None else []) + default_data_dirs()
    for base in bases:
        for candidate in (base / "beir" / name.lower(), base / "beir" / name):
            if is_beir_folder(candidate):
                return candidate.resolve()
    return None


def builtin_task(name: str, split: str = "test", data_dir: str | Path | None = None):
    """A built-in MTEB task: hub data if cached (or reachable), else densekit's local copy, else an error."""
    import mteb

    from densekit.evaluation.sts import STS_TASKS, sts_task_folder

    try:
        task = mteb.get_task(name)
    except KeyError as exc:
        raise ConfigError(f"unknown MTEB task '{name}' and no such folder ({exc.args[0]}). "
                          "Give a built-in MTEB task name or a local BEIR/STS folder.") from None
    name = task.metadata.name
    if split not in task.metadata.eval_splits:
        raise ConfigError(f"MTEB task '{name}' evaluates split(s) {', '.join(task.metadata.eval_splits)}, "
                          f"not '{split}'")
    task = task.filter_eval_splits([split])
    if _hf_cached(task.metadata.dataset):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # use the cached copy without asking the hub
        return task
    local: Path | None = None
    if name in STS_TASKS and task.metadata.type == "STS":
        folder = sts_task_folder(name, data_dir)
        local = folder if folder.is_dir() else None
        if local is not None:
            return _sts_class(type(task), local, split)().filter_eval_splits([split])
    if task.metadata.type == "Retrieval":
        local = _local_beir_copy(name, data_dir)
        if local is not None:
            return _retrieval_class(type(task), local, split)().filter_eval_splits([split])
    if _hub_reachable():
        return task
    raise DensekitError(
        f"MTEB task '{name}' needs the Hugging Face dataset {task.metadata.dataset.get('path')} "
        f"(revision {task.metadata.dataset.get('revision')}), which is not in the local cache "
        f"and the hub is unreachable (HF_HUB_OFFLINE or no network). Download it on a connected machine "
        f"into the Hugging Face cache, or pass a local BEIR/STS folder instead.")


def resolve_task(spec: str, split: str = "test", data_dir: str | Path | None = None):
    """One MTEB task instance from a folder path or a task name."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if is_beir_folder(path):
            return beir_retrieval_task(path, split)
        if not any(any(path.glob(pattern)) for pattern in ("sts-*.csv", "SICK_*.txt", "STS*.input.*.txt")):
            raise DataError("neither a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/) nor an STS folder "
                            "(sts-<split>.csv, SICK_*.txt or STS*.input.*.txt)", path=str(path))
        return sts_folder_task(path, split)
    if os.sep in spec or spec.startswith("."):
        raise DataError("task folder not found", path=spec)
    return builtin_task(spec, split, data_dir)
