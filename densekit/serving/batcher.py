"""The micro-batcher: concurrent search requests answered by one encode call and one FAISS search per batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from densekit.retrieval.index import Hit
from densekit.retrieval.searcher import Searcher
from densekit.serving.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    texts: list[str]
    k: int
    searcher: Searcher  # the index this request searches (requests from before a swap keep the old one)
    future: asyncio.Future


class SearchBatcher:
    """Collects concurrent search requests for up to ``wait_s`` and answers them with one encode + one search.

    Runs ``encode_fn`` and FAISS in a single worker thread, so the event loop stays free to accept requests
    (which then form the next batch) while a batch is being encoded.
    """

    def __init__(self, encode_fn: Callable[[list[str]], np.ndarray], metrics: Metrics, max_queries: int,
                 wait_s: float) -> None:
        self.encode_fn, self.metrics = encode_fn, metrics
        self.max_queries, self.wait_s = max_queries, wait_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="densekit-encode")

    def _ensure_started(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        # started lazily, and again if the app is now driven by another event loop (tests, reloaders)
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        return self._queue

    async def search(self, texts: list[str], k: int, searcher: Searcher) -> list[list[Hit]]:
        """The top ``k`` hits of each text in ``searcher``'s index, encoded together with other waiting requests."""
        future = asyncio.get_running_loop().create_future()
        await self._ensure_started().put(_Pending(texts, k, searcher, future))
        return await future

    async def close(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="densekit-encode")

    async def _collect(self) -> list[_Pending]:
        queue, loop = self._queue, asyncio.get_running_loop()
        batch = [await queue.get()]
        size = len(batch[0].texts)
        deadline = loop.time() + self.wait_s
        while size < self.max_queries:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [item for item in batch if not item.future.done()]  # a client that went away is not encoded
            if not live:
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self._encode_and_search, live)
            except Exception as exc:  # one bad batch must not stop the server: fail its requests only
                logger.exception("search batch of %d requests failed", len(live))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, answer in zip(live, answers, strict=True):
                if not item.future.done():
                    item.future.set_result(answer)

    def _encode_and_search(self, batch: list[_Pending]) -> list[list[list[Hit]]]:
        texts = [text for item in batch for text in item.texts]
        self.metrics.batch_queries.observe(len(texts))
        self.metrics.batch_requests.observe(len(batch))
        start = time.perf_counter()
        embeddings = self.encode_fn(texts)
        self.metrics.encode_seconds.observe(time.perf_counter() - start)
        offsets = np.cumsum([0] + [len(item.texts) for item in batch])
        answers: list[list[list[Hit]]] = [[] for _ in batch]
        # one FAISS call per index: requests that arrived before a swap still search the old one
        by_searcher: dict[int, list[int]] = {}
        for i, item in enumerate(batch):
            by_searcher.setdefault(id(item.searcher), []).append(i)
        start = time.perf_counter()
        for members in by_searcher.values():
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
            hits = batch[members[0]].searcher.search_vectors(embeddings[rows], max(batch[i].k for i in members))
            cursor = 0
            for i in members:
                n, k = len(batch[i].texts), batch[i].k
                answers[i] = [query_hits[:k] for query_hits in hits[cursor:cursor + n]]
                cursor += n
        self.metrics.search_seconds.observe(time.perf_counter() - start)
        return answers
