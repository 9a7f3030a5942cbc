"""Read BEIR-format datasets: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import os
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from densekit.data.corpus import open_corpus
from densekit.data.documents import Corpus, doc_text, load_corpus, parse_document, require_str
from densekit.errors import DataError
from densekit.io import read_jsonl, read_lines

__all__ = ["BeirDataset", "Corpus", "Qrels", "Queries", "doc_text", "load_beir", "load_corpus", "load_qrels",
           "load_queries", "parse_document"]

# Public mirror used by the BEIR benchmark itself.
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    path: Path
    corpus: Mapping[str, dict[str, str]]  # a dict, or a DocStore for corpora beyond RAM (densekit.data.corpus)
    queries: Queries
    qrels: Qrels = field(default_factory=dict)
    split: str | None = None

    def split_queries(self) -> Queries:
        """The queries that have judgments in the loaded split."""
        return {qid: self.queries[qid] for qid in self.qrels}


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"no {stem}.jsonl or {stem}.jsonl.gz in this folder", path=str(folder))


def load_queries(path: str | os.PathLike) -> Queries:
    path = Path(path)
    queries: Queries = {}
    for lineno, obj in read_jsonl(path):
        qid = require_str(obj, "_id", path, lineno)
        if qid in queries:
            raise DataError(f"duplicate query id '{qid}'", path=str(path), line=lineno, field="_id")
        queries[qid] = require_str(obj, "text", path, lineno)
    if not queries:
        raise DataError("no queries", path=str(path))
    return queries


def load_qrels(path: str | os.PathLike, corpus: Mapping[str, dict[str, str]] | None = None,
               queries: Queries | None = None) -> Qrels:
    """Read a ``query-id<TAB>corpus-id<TAB>score`` file (header optional); ids are checked when given."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").rstrip("\r").split("\t")
        if lineno == 1 and parts[0] in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 4:  # TREC style: qid Q0 docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(f"expected 3 tab-separated columns, found {len(parts)}", path=str(path), line=lineno)
        qid, doc_id, score = parts
        for name, value in (("query-id", qid), ("corpus-id", doc_id)):
            if not value.strip():
                raise DataError("empty id", path=str(path), line=lineno, field=name)
        try:
            rel = int(float(score))
        except (ValueError, OverflowError):  # "x", "nan"; "inf", "1e400"
            raise DataError(f"score '{score[:40]}' is not a finite number", path=str(path), line=lineno,
                            field="score") from None
        if queries is not None and qid not in queries:
            raise DataError(f"unknown query id '{qid}'", path=str(path), line=lineno, field="query-id")
        if corpus is not None and doc_id not in corpus:
            raise DataError(f"unknown document id '{doc_id}'", path=str(path), line=lineno, field="corpus-id")
        judged = qrels.setdefault(qid, {})
        if judged.get(doc_id, rel) != rel:
            raise DataError(f"query '{qid}' judges document '{doc_id}' twice, {judged[doc_id]} and then {rel}",
                            path=str(path), line=lineno, field="score")
        judged[doc_id] = rel
    if not qrels:
        raise DataError("no judgments", path=str(path))
    return qrels


def default_data_dirs() -> list[Path]:
    """Where a dataset given by name is looked for, in order."""
    dirs = []
    if os.environ.get("DENSEKIT_DATA"):
        dirs.append(Path(os.environ["DENSEKIT_DATA"]))
    dirs += [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data",
             Path.home() / ".cache" / "densekit" / "data"]
    return dirs


def resolve_beir_dir(name_or_path: str | os.PathLike, download: bool = True) -> Path:
    """A folder path is used as is; a name like ``scifact`` is looked up locally, else downloaded."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return candidate
    name = str(name_or_path)
    if os.sep in name or name.startswith("."):
        raise DataError("dataset folder not found", path=name)
    for base in default_data_dirs():
        if (base / "beir" / name).is_dir():
            return (base / "beir" / name).resolve()
    if not download:
        raise DataError(f"dataset '{name}' not found locally (looked in {', '.join(map(str, default_data_dirs()))})")
    return download_beir(name, Path.home() / ".cache" / "densekit" / "data" / "beir")


def download_beir(name: str, target_root: Path) -> Path:
    url = BEIR_URL.format(name=name)
    target_root.mkdir(parents=True, exist_ok=True)
    zip_path = target_root / f"{name}.zip"
    try:
        tmp = zip_path.with_suffix(".zip.part")
        urllib.request.urlretrieve(url, tmp)
        os.replace(tmp, zip_path)
    except OSError as exc:
        raise DataError(f"could not download BEIR dataset '{name}' from {url}: {exc}. "
                        "Pass a local folder with corpus.jsonl, queries.jsonl and qrels/ instead.") from None
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target_root)
    return target_root / name


def corpus_file(name_or_path: str | os.PathLike) -> Path:
    """The corpus file of a BEIR folder or name, or ``name_or_path`` itself when it is a file."""
    path = Path(name_or_path).expanduser()
    return path if path.is_file() else _find(resolve_beir_dir(name_or_path), "corpus")


def load_beir(name_or_path: str | os.PathLike, split: str | None = "test", check_ids: bool = True,
              stream: bool | None = None, cache_dir: str | os.PathLike | None = None) -> BeirDataset:
    """The dataset; its corpus is a dict, or a memory-mapped DocStore when ``stream`` (default: when the corpus
    file is over 200 MB; converted once into ``cache_dir``, see :mod:`densekit.data.corpus`)."""
    folder = resolve_beir_dir(name_or_path)
    corpus = open_corpus(_find(folder, "corpus"), stream, cache_dir)
    queries = load_queries(_find(folder, "queries"))
    qrels: Qrels = {}
    if split is not None:
        qrels_path = folder / "qrels" / f"{split}.tsv"
        if not qrels_path.exists():
            available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            raise DataError(f"no qrels for split '{split}' (available: {', '.join(available) or 'none'})",
                            path=str(qrels_path))
        qrels = load_qrels(qrels_path, corpus if check_ids else None, queries if check_ids else None)
    return BeirDataset(path=folder, corpus=corpus, queries=queries, qrels=qrels, split=split)
