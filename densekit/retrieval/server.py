"""The HTTP search server behind ``densekit serve``: FastAPI app factory, micro-batcher and atomic index swap.

Routes: ``POST /search``, ``GET /health``, ``GET /metrics`` (Prometheus), ``POST /admin/swap``, and FastAPI's
``/docs`` + ``/openapi.json``. Concurrent ``/search`` requests are queued for a few milliseconds and served by one
``model.encode`` call and one FAISS search in a worker thread. The index in use is one reference to an
immutable ``ServingIndex``; a swap loads the new folder off the event loop and replaces that reference, so a
request that started on the old index finishes on it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from densekit.errors import ConfigError, DataError, DensekitError
from densekit.options import option
from densekit.retrieval.gpu import to_gpu
from densekit.retrieval.index import DenseIndex

logger = logging.getLogger(__name__)

MMAP_AUTO_BYTES = 1 << 30  # indexes larger than this are memory-mapped when mmap="auto"
OPEN_ROUTES = ("/health",)  # answered without the API key (load balancers probe it)


@dataclass
class ServerConfig:
    """server limits and behaviour"""

    max_k: int = option(100, help="largest k a request may ask for")
    max_queries: int = option(64, help="queries per request")
    max_query_chars: int = option(2048, help="characters per query")
    max_body_bytes: int = option(1 << 20, help="request body size limit")
    batch_wait_ms: float = option(2.0, help="how long to gather concurrent requests into one encode call")
    max_batch_queries: int = option(128, help="queries per encode call")
    api_key: str | None = option(None, help="require this key on every route but /health "
                                            "(default: $DENSEKIT_API_KEY, else none)")
    allow_swap: bool = option(True, flag="--no-swap", help="disable POST /admin/swap")
    mmap: Literal["auto", "on", "off"] = option("auto", help="memory-map the index (auto: when index.faiss is "
                                                             "over 1 GiB)")
    gpu: bool = option(True, flag="--no-gpu", help="keep the index on the CPU even when faiss has GPUs")
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("max_k", "max_queries", "max_query_chars", "max_body_bytes", "max_batch_queries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.batch_wait_ms < 0:
            raise ConfigError("--batch-wait-ms must not be negative")
        if self.api_key is None:
            self.api_key = os.environ.get("DENSEKIT_API_KEY") or None


class SearchRequest(BaseModel):
    """One query (``query``) or many (``queries``), ``k`` hits each; ``return_text`` adds document text."""

    model_config = ConfigDict(extra="forbid", strict=True)
    query: str | None = None
    queries: list[str] | None = None
    k: int = 10
    return_text: bool = False


class Hit(BaseModel):
    id: str
    score: float
    text: str | None = None


class QueryResult(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    results: list[QueryResult]
    index_version: int
    took_ms: float


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    index: str
    corpus: str | None = None


class RequestError(Exception):
    """A request the server refuses: answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class ServingIndex:
    """What one request searches: never mutated, only replaced as a whole by a swap."""

    index: DenseIndex
    texts: dict[str, str] | None
    folder: str
    version: int
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        meta = self.index.meta
        return {"folder": self.folder, "version": self.version, "count": len(self.index.doc_ids),
                "index_type": meta.get("index_type"), "search_params": meta.get("search_params", {}),
                "model": meta.get("model"), "loaded_at": self.loaded_at, "has_text": self.texts is not None}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("densekit_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("densekit_request_seconds", "HTTP request latency", ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.in_flight = Gauge("densekit_requests_in_flight", "HTTP requests being served", registry=r)
        self.queries = Counter("densekit_queries_total", "queries searched", registry=r)
        self.batch_queries = Histogram("densekit_batch_queries", "queries per micro-batch (one encode call)",
                                       registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_requests = Histogram("densekit_batch_requests", "requests per micro-batch", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.encode_seconds = Histogram("densekit_encode_seconds", "model.encode time per micro-batch", registry=r)
        self.search_seconds = Histogram("densekit_search_seconds", "FAISS search time per micro-batch", registry=r)
        self.index_vectors = Gauge("densekit_index_vectors", "vectors in the index being served", registry=r)
        self.index_version = Gauge("densekit_index_version", "swap counter of the index being served", registry=r)
        self.swaps = Counter("densekit_index_swaps_total", "index swaps", ["outcome"], registry=r)


def model_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _corpus_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (path / name).exists():
            return path / name
    return None


def load_texts(corpus: str | Path, doc_ids: list[str]) -> dict[str, str]:
    """Document text (title + text) of every indexed id, from a BEIR folder or corpus.jsonl(.gz)."""
    from densekit.data.beir import doc_text, load_corpus

    path = _corpus_file(Path(corpus))
    if path is None:
        raise DataError("no corpus.jsonl or corpus.jsonl.gz to take document text from", path=str(corpus))
    docs = load_corpus(path)
    missing = [d for d in doc_ids[:1000] if d not in docs]
    if missing:
        raise DataError(f"the corpus lacks indexed document ids such as {missing[0]!r}; is it the indexed corpus?",
                        path=str(path))
    return {d: doc_text(docs[d]) for d in doc_ids if d in docs}


def load_serving_index(folder: str | Path, version: int, dim: int, mmap: str = "auto", gpu: bool = True,
                       corpus: str | Path | None = None, with_text: bool = True) -> ServingIndex:
    """Load an index folder for serving and check that the model's vectors fit it."""
    folder = Path(folder)
    size = (folder / "index.faiss").stat().st_size if (folder / "index.faiss").exists() else 0
    use_mmap = mmap == "on" or (mmap == "auto" and size > MMAP_AUTO_BYTES)
    index = DenseIndex.load(folder, mmap=use_mmap)
    if index.index.d != dim:
        raise DataError(f"index vectors have {index.index.d} dimensions but the model makes {dim}", path=str(folder))
    index.index = to_gpu(index.index, enabled=gpu)
    texts = None
    corpus = corpus or index.meta.get("corpus")
    if with_text and corpus:
        texts = load_texts(corpus, index.doc_ids)
    return ServingIndex(index=index, texts=texts, folder=str(folder), version=version)


class SearchBatcher:
    """Collects concurrent search requests for up to ``wait_s`` and answers them with one encode + one search.

    Runs ``encode_fn`` and FAISS in a single worker thread, so the event loop stays free to accept requests
    (which then form the next batch) while a batch is being encoded.
    """

    def __init__(self, encode_fn: Callable[[list[str]], np.ndarray], metrics: Metrics, max_queries: int,
                 wait_s: float) -> None:
        self.encode_fn, self.metrics = encode_fn, metrics
        self.max_queries, self.wait_s = max_queries, wait_s
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="densekit-encode")

    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        # started lazily, and again if the app is now driven by another event loop (tests, reloaders)
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        return self._queue

    async def search(self, texts: list[str], k: int, state: ServingIndex) -> tuple[np.ndarray, np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        await self._ensure_started().put((texts, k, state, future))
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

    async def _collect(self) -> list[tuple]:
        queue, loop = self._queue, asyncio.get_running_loop()
        batch = [await queue.get()]
        size = len(batch[0][0])
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
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [item for item in batch if not item[3].done()]  # a client that went away is not encoded
            if not live:
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self._encode_and_search, live)
            except Exception as exc:  # one bad batch must not stop the server: fail its requests only
                logger.exception("search batch of %d requests failed", len(live))
                for item in live:
                    if not item[3].done():
                        item[3].set_exception(exc)
                continue
            for item, answer in zip(live, answers, strict=True):
                if not item[3].done():
                    item[3].set_result(answer)

    def _encode_and_search(self, batch: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        texts = [text for item in batch for text in item[0]]
        self.metrics.batch_queries.observe(len(texts))
        self.metrics.batch_requests.observe(len(batch))
        start = time.perf_counter()
        embeddings = self.encode_fn(texts)
        self.metrics.encode_seconds.observe(time.perf_counter() - start)
        offsets = np.cumsum([0] + [len(item[0]) for item in batch])
        answers: list[Any] = [None] * len(batch)
        # one FAISS call per index object: requests that arrived before a swap still search the old one
        by_state: dict[int, list[int]] = {}
        for i, item in enumerate(batch):
            by_state.setdefault(id(item[2]), []).append(i)
        start = time.perf_counter()
        for members in by_state.values():
            state = batch[members[0]][2]
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
            scores, ids = state.index.search(embeddings[rows], max(batch[i][1] for i in members))
            cursor = 0
            for i in members:
                n, k = len(batch[i][0]), batch[i][1]
                answers[i] = (scores[cursor:cursor + n, :k], ids[cursor:cursor + n, :k])
                cursor += n
        self.metrics.search_seconds.observe(time.perf_counter() - start)
        return answers


class SearchServer:
    """The state behind the app: model, current index, batcher, metrics. ``swap`` is also callable directly."""

    def __init__(self, model, serving: ServingIndex, config: ServerConfig) -> None:
        from densekit.models import encode

        self.model, self.config, self.metrics = model, config, Metrics()
        self.dim = model_dim(model)
        self._current = serving
        self._swap_lock = threading.Lock()
        self.batcher = SearchBatcher(
            lambda texts: encode(model, texts, batch_size=config.encode_batch_size, show_progress=False),
            self.metrics, config.max_batch_queries, config.batch_wait_ms / 1000)
        self._publish(serving)

    @property
    def current(self) -> ServingIndex:
        return self._current

    def _publish(self, serving: ServingIndex) -> None:
        self.metrics.index_vectors.set(len(serving.index.doc_ids))
        self.metrics.index_version.set(serving.version)

    def swap(self, folder: str | Path, corpus: str | Path | None = None) -> ServingIndex:
        """Load ``folder`` and make it the index new requests search; blocks (run it off the event loop)."""
        if not self._swap_lock.acquire(blocking=False):
            raise RequestError(409, "another index swap is in progress; retry when it ends")
        try:
            old = self._current
            new = load_serving_index(folder, old.version + 1, self.dim, self.config.mmap, self.config.gpu,
                                     with_text=False)
            texts = None
            if corpus is not None:
                texts = load_texts(corpus, new.index.doc_ids)
            elif old.texts is not None and all(d in old.texts for d in new.index.doc_ids):
                texts = old.texts  # same corpus: share the text instead of reading it again
            elif old.texts is not None and new.index.meta.get("corpus"):
                texts = load_texts(new.index.meta["corpus"], new.index.doc_ids)
            new = ServingIndex(new.index, texts, new.folder, new.version)
            self._current = new  # one reference assignment: atomic for readers
            self._publish(new)
            self.metrics.swaps.labels("ok").inc()
            logger.info("now serving %s (version %d, %d vectors)", new.folder, new.version, len(new.index.doc_ids))
            return new
        except Exception:
            self.metrics.swaps.labels("failed").inc()
            raise
        finally:
            self._swap_lock.release()

    def validate(self, body: bytes) -> SearchRequest:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(400, f"request body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON") from None
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                    f"column {exc.colno}") from None
        if not isinstance(payload, dict):
            raise RequestError(422, 'request body must be a JSON object like {"query": "text", "k": 10}')
        try:
            request = SearchRequest.model_validate(payload)
        except ValidationError as exc:
            raise RequestError(422, _validation_message(exc)) from None
        cfg = self.config
        if (request.query is None) == (request.queries is None):
            raise RequestError(422, "give exactly one of 'query' (a string) or 'queries' (a list of strings)")
        queries = [request.query] if request.query is not None else request.queries
        if not queries:
            raise RequestError(422, "'queries' is empty; send at least one query")
        if len(queries) > cfg.max_queries:
            raise RequestError(413, f"{len(queries)} queries in one request; this server takes at most "
                                    f"{cfg.max_queries} (split the request)")
        for i, q in enumerate(queries):
            where = "'query'" if request.query is not None else f"queries[{i}]"
            if not q.strip():
                raise RequestError(422, f"{where} is empty; send some text to search for")
            if len(q) > cfg.max_query_chars:
                raise RequestError(422, f"{where} has {len(q)} characters; the limit is {cfg.max_query_chars}")
        if not 1 <= request.k <= cfg.max_k:
            raise RequestError(422, f"k={request.k} is out of range; k must be between 1 and {cfg.max_k}")
        return request

    async def search(self, request: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        state = self._current  # this request searches this index even if a swap lands meanwhile
        queries = [request.query] if request.query is not None else request.queries
        if request.return_text and state.texts is None:
            raise RequestError(422, "this server has no document text (start it with --corpus) so "
                                    "return_text cannot be served")
        scores, rows = await self.batcher.search(queries, request.k, state)
        self.metrics.queries.inc(len(queries))
        doc_ids, texts = state.index.doc_ids, state.texts if request.return_text else None
        results = []
        for query, score_row, id_row in zip(queries, scores, rows, strict=True):
            hits = [Hit(id=doc_ids[r], score=float(s), text=texts.get(doc_ids[r]) if texts is not None else None)
                    for s, r in zip(score_row, id_row, strict=True) if r >= 0]
            results.append(QueryResult(query=query, hits=hits))
        return SearchResponse(results=results, index_version=state.version,
                              took_ms=round(1000 * (time.perf_counter() - start), 3))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field '{where}' (fields: query, queries, k, return_text)")
        else:
            parts.append(f"field '{where}': {err['msg']} (got {json.dumps(err.get('input'))[:80]})")
    return "; ".join(parts)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class GuardMiddleware:
    """ASGI middleware: API key, body-size limit and per-route metrics for every request."""

    def __init__(self, app, server: SearchServer) -> None:
        self.app, self.server = app, server
        self.routes = {"/search", "/health", "/metrics", "/admin/swap", "/docs", "/openapi.json", "/redoc"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics, config = self.server.metrics, self.server.config
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = [500]

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope, config)
            if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, too_big = await _read_body(receive, config.max_body_bytes)
                if too_big:
                    refusal = _error(413, f"request body is larger than the {config.max_body_bytes}-byte limit")
                else:
                    receive = _replay(body, receive)
            if refusal is not None:
                await refusal(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(status[0])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refusal(self, scope, config: ServerConfig) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if config.api_key and scope["path"] not in OPEN_ROUTES:
            given = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if given is None and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given is None:
                return _error(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                              {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.encode("utf-8", "replace"), config.api_key.encode("utf-8")):
                return _error(403, "wrong API key")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, f"bad Content-Length header {length!r}")
            if int(length) > config.max_body_bytes:
                return _error(413, f"request body of {length} bytes is larger than the "
                                   f"{config.max_body_bytes}-byte limit")
        return None


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(index: str | Path | ServingIndex, model, config: ServerConfig | None = None,
               corpus: str | Path | None = None, with_text: bool = True) -> FastAPI:
    """The FastAPI app serving ``index`` (an index folder) with ``model`` (a SentenceTransformer or its name)."""
    from contextlib import asynccontextmanager

    config = config or ServerConfig()
    if isinstance(model, str | Path):
        from densekit.models import load_model

        model = load_model(str(model))
    if isinstance(index, ServingIndex):
        serving = index
    else:
        serving = load_serving_index(index, 1, model_dim(model), config.mmap, config.gpu,
                                     corpus=corpus, with_text=with_text)
    server = SearchServer(model, serving, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await server.batcher.close()

    app = FastAPI(title="densekit search", version="1", lifespan=lifespan,
                  description="Dense retrieval over a FAISS index. Every route but /health needs the API key "
                              "when the server has one (Authorization: Bearer <key> or X-API-Key).")
    app.state.server = server
    app.add_middleware(GuardMiddleware, server=server)
    search_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": SearchRequest.model_json_schema()}}}}
    swap_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": SwapRequest.model_json_schema()}}}}
    refusals = {400: {"description": "body is not UTF-8 JSON"}, 413: {"description": "body or batch too large"},
                422: {"description": "bad field value (empty query, k out of range, wrong type)"},
                401: {"description": "missing API key"}, 403: {"description": "wrong API key"}}

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
              openapi_extra=search_body, responses=refusals,
              summary="search the index with one or many text queries")
    async def search(request: Request):
        try:
            parsed = server.validate(await request.body())
            return await server.search(parsed)
        except RequestError as exc:
            return _error(exc.status, exc.message)

    @app.get("/health", summary="liveness and the index being served (no API key needed)")
    async def health():
        return {"status": "ok", "index": server.current.describe(), "model_dim": server.dim}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/swap", openapi_extra=swap_body, responses=refusals,
              summary="load another index folder and serve it; in-flight requests finish on the old one")
    async def swap(request: Request):
        if not config.allow_swap:
            return _error(403, "index swaps are disabled on this server")
        body = await request.body()
        try:
            wanted = SwapRequest.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, _validation_message(exc).replace("query, queries, k, return_text", "index, corpus"))
        if not Path(wanted.index).is_dir():
            return _error(404, f"index folder not found: {wanted.index}")
        try:
            new = await asyncio.to_thread(server.swap, wanted.index, wanted.corpus)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except DensekitError as exc:
            return _error(422, f"cannot serve that index: {exc}")
        return {"status": "swapped", "index": new.describe()}

    return app
