"""What the server serves: the immutable ``ServingIndex`` (a Searcher plus document text), and the swap.

The index in use is one reference to a ``ServingIndex``. A request reads that reference once, when it arrives;
a swap loads the new folder (off the event loop) and replaces the reference, so requests already in flight
finish on the old index and the old index is freed when the last of them ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import DataError
from densekit.retrieval.gpu import to_gpu
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.searcher import Searcher, model_dim
from densekit.serving.batcher import SearchBatcher
from densekit.serving.config import ServerConfig
from densekit.serving.metrics import Metrics
from densekit.serving.schemas import Hit, QueryResult, SearchRequest, SearchResponse

logger = logging.getLogger(__name__)

MMAP_AUTO_BYTES = 1 << 30  # indexes larger than this are memory-mapped when mmap="auto"


class SwapInProgress(RuntimeError):
    """Another swap is loading an index; this one was refused rather than queued."""


@dataclass(frozen=True)
class ServingIndex:
    """What one request searches: never mutated, only replaced as a whole by a swap."""

    searcher: Searcher
    texts: Mapping[str, str] | None  # a dict, or looked up on demand in a memory-mapped corpus (big corpora)
    folder: str | None
    version: int
    loaded_at: float = field(default_factory=time.time)

    @property
    def index(self) -> DenseIndex:
        return self.searcher.index

    def describe(self) -> dict[str, Any]:
        meta = self.index.meta
        return {"folder": self.folder, "version": self.version, "count": len(self.index.doc_ids),
                "index_type": meta.get("index_type"), "search_params": meta.get("search_params", {}),
                "model": meta.get("model"), "loaded_at": self.loaded_at, "has_text": self.texts is not None}


def use_mmap(folder: str | Path, mode: str) -> bool:
    """Whether ``--mmap mode`` memory-maps the index in ``folder`` (auto: when its index files are over 1 GiB)."""
    if mode != "auto":
        return mode == "on"
    return sum(p.stat().st_size for p in Path(folder).glob("**/index.faiss")) > MMAP_AUTO_BYTES


def _corpus_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (path / name).exists():
            return path / name
    return None


def load_texts(corpus: str | Path, doc_ids: Sequence[str], cache_dir: str | Path | None = None) -> Mapping[str, str]:
    """Document text (title + text) by id, from a BEIR folder or corpus.jsonl(.gz): a dict for a small corpus, a
    lookup into the memory-mapped corpus for a big one (converted once into ``cache_dir``, see
    :mod:`densekit.data.corpus`)."""
    from densekit.data.beir import doc_text
    from densekit.data.corpus import DocStore, open_corpus

    path = _corpus_file(Path(corpus))
    if path is None:
        raise DataError("no corpus.jsonl or corpus.jsonl.gz to take document text from", path=str(corpus))
    docs = open_corpus(path, cache_dir=cache_dir)
    missing = [d for d in doc_ids[:1000] if d not in docs]
    if missing:
        raise DataError(f"the corpus lacks indexed document ids such as {missing[0]!r}; is it the indexed corpus?",
                        path=str(path))
    if isinstance(docs, DocStore):
        return docs.texts()
    return {d: doc_text(docs[d]) for d in doc_ids if d in docs}


def covers(texts: Mapping[str, str], doc_ids: Sequence[str], sample: int = 1000) -> bool:
    """Whether ``texts`` has the text of ``doc_ids`` (every id for small indexes, a spread sample for big ones)."""
    if len(doc_ids) <= 10 * sample:
        return all(d in texts for d in doc_ids)
    rows = np.linspace(0, len(doc_ids) - 1, sample).astype(int)
    return len(texts) >= len(doc_ids) and all(doc_ids[int(r)] in texts for r in rows)


def serving_index(searcher: Searcher, version: int, config: ServerConfig, texts: Mapping[str, str] | None = None,
                  folder: str | Path | None = None) -> ServingIndex:
    """``searcher`` ready to serve: its index moved to the GPUs when faiss has them (unless ``--no-gpu``)."""
    searcher.index.index = to_gpu(searcher.index.index, enabled=config.gpu, shard=config.gpu_mode == "shard",
                                  fp16=config.gpu_fp16)
    folder = folder if folder is not None else searcher.index.folder
    return ServingIndex(searcher, texts, str(folder) if folder is not None else None, version)


class ServerState:
    """The state behind the app: the query encoder, the current index, batcher and metrics.

    ``swap`` is also callable directly (``app.state.server.swap(folder)``).
    """

    def __init__(self, searcher: Searcher, config: ServerConfig, texts: dict[str, str] | None = None) -> None:
        self.config, self.metrics = config, Metrics()
        self.dim = model_dim(searcher.encoder)
        self._current = serving_index(searcher, 1, config, texts)
        self._swap_lock = threading.Lock()
        self.batcher = SearchBatcher(lambda texts: searcher.encode_queries(texts, show_progress=False),
                                     self.metrics, config.max_batch_queries, config.batch_wait_ms / 1000)
        self._publish(self._current)

    @property
    def current(self) -> ServingIndex:
        return self._current

    def _publish(self, serving: ServingIndex) -> None:
        self.metrics.index_vectors.set(len(serving.index.doc_ids))
        self.metrics.index_version.set(serving.version)

    def swap(self, folder: str | Path, corpus: str | Path | None = None) -> ServingIndex:
        """Load ``folder`` and make it the index new requests search; blocks (run it off the event loop).

        Raises :class:`SwapInProgress` while another swap runs, and a ``DensekitError`` for a folder that cannot
        be served (missing files, vectors of another dimension than the query encoder's); either way the old
        index keeps serving.
        """
        if not self._swap_lock.acquire(blocking=False):
            raise SwapInProgress("another index swap is in progress; retry when it ends")
        try:
            old = self._current
            index = DenseIndex.load(folder, mmap=use_mmap(folder, self.config.mmap))
            previous = old.searcher
            searcher = Searcher(index, previous.encoder, batch_size=previous.batch_size, bf16=previous.bf16)
            texts = None
            if corpus is not None:
                texts = load_texts(corpus, index.doc_ids)
            elif old.texts is not None and covers(old.texts, index.doc_ids):
                texts = old.texts  # same corpus: share the text instead of reading it again
            elif old.texts is not None and index.meta.get("corpus"):
                texts = load_texts(index.meta["corpus"], index.doc_ids)
            new = serving_index(searcher, old.version + 1, self.config, texts, folder)
            self._current = new  # one reference assignment: atomic for readers
            self._publish(new)
            self.metrics.swaps.labels("ok").inc()
            logger.info("now serving %s (version %d, %d vectors)", new.folder, new.version, len(index.doc_ids))
            return new
        except Exception:
            self.metrics.swaps.labels("failed").inc()
            raise
        finally:
            self._swap_lock.release()

    async def search(self, request: SearchRequest, serving: ServingIndex) -> SearchResponse:
        """Answer a validated request from ``serving`` (read once by the caller, so a swap cannot split it)."""
        start = time.perf_counter()
        queries = request.texts
        hits = await self.batcher.search(queries, request.k, serving.searcher)
        self.metrics.queries.inc(len(queries))
        texts = serving.texts if request.return_text else None
        results = [QueryResult(query=query, hits=[Hit(doc_id=h.doc_id, score=h.score,
                                                      text=texts.get(h.doc_id) if texts is not None else None)
                                                  for h in query_hits])
                   for query, query_hits in zip(queries, hits, strict=True)]
        return SearchResponse(results=results, index_version=serving.version,
                              took_ms=round(1000 * (time.perf_counter() - start), 3))
