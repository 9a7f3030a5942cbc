"""The FastAPI app: ``create_app(searcher, config)`` and its routes.

Routes: ``POST /search``, ``GET /health``, ``GET /metrics`` (Prometheus), ``POST /admin/swap``, and FastAPI's
``/docs`` + ``/openapi.json``. Bodies are pydantic models (:mod:`densekit.serving.schemas`) validated by FastAPI;
the server's limits are a dependency and every validation error is answered by one handler
(:mod:`densekit.serving.validation`). Concurrent searches share one encode call (:mod:`~densekit.serving.batcher`);
a swap replaces the served index atomically (:mod:`~densekit.serving.state`)::

    searcher = Searcher.from_index("runs/scifact/index")   # the index and the query model it records
    app = create_app(searcher, ServerConfig(api_key="..."))
"""

# no "from __future__ import annotations": FastAPI reads the routes' annotations, which use local names
import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response

from densekit.errors import DensekitError
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.searcher import Searcher
from densekit.serving.config import ServerConfig
from densekit.serving.guard import GuardMiddleware
from densekit.serving.schemas import (
    ErrorBody,
    HealthResponse,
    SearchRequest,
    SearchResponse,
    SwapRequest,
    SwapResponse,
)
from densekit.serving.state import ServerState, SwapInProgress, load_texts, use_mmap
from densekit.serving.validation import JSONRoute, field_error, search_limits, validation_error_handler

logger = logging.getLogger(__name__)


def _responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for refusals, all answered as :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": text} for code, text in sorted(described.items())}


GUARDED = {401: "missing API key", 403: "wrong API key"}
BODY_REFUSALS = {**GUARDED, 400: "body is not UTF-8 JSON (or is empty)", 408: "body not received within the "
                 "server's --read-timeout", 413: "body too large",
                 415: "Content-Type is not application/json"}
SEARCH_REFUSALS = {**BODY_REFUSALS, 413: "body too large, or more queries than the server's --max-queries",
                   422: "a bad field: wrong type, unknown field, empty query, k or query length over the server's "
                        "limits, neither or both of query and queries, return_text without document text"}
SWAP_REFUSALS = {**BODY_REFUSALS, 403: "wrong API key, or swaps are disabled", 404: "index folder not found",
                 409: "another swap is in progress",
                 422: "a bad field, or an index this server cannot serve (its vectors do not fit the query "
                      "encoder, files missing)"}


def openapi_with_limits(app: FastAPI, config: ServerConfig):
    """``app.openapi`` with this server's limits (``--max-k``, ``--max-queries``, ``--max-query-chars``) written
    into the SearchRequest schema, so that a request the schema allows is one the server accepts (what schema
    fuzzers such as schemathesis check)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's, cached on the app; the limits are added to it once
            fields = schema["components"]["schemas"]["SearchRequest"]["properties"]
            fields["k"]["maximum"] = config.max_k
            fields["query"]["maxLength"] = config.max_query_chars
            fields["queries"]["maxItems"] = config.max_queries
            fields["queries"]["items"]["maxLength"] = config.max_query_chars
        return app.openapi_schema

    return openapi


def folder_exists(folder: str) -> bool:
    """Whether ``folder`` is a folder; a path the OS cannot even look up (a NUL byte, an unpaired surrogate, a
    name too long) is simply not one."""
    try:
        return Path(folder).is_dir()
    except (OSError, ValueError):
        return False


def create_app(searcher: Searcher, config: ServerConfig | None = None, *, corpus: str | Path | None = None,
               with_text: bool = True) -> FastAPI:
    """The app serving ``searcher`` (an index and its query encoder; see ``Searcher.from_index``).

    Document text for ``return_text`` comes from ``corpus`` (a BEIR folder or corpus.jsonl[.gz]), by default the
    corpus the index records; ``with_text=False`` loads none. The index moves to the GPU when faiss has one
    (unless ``config.gpu`` is off).
    """
    config = config or ServerConfig()
    index = searcher.index
    corpus = corpus or index.meta.get("corpus")
    texts = load_texts(corpus, index.doc_ids) if with_text and corpus else None
    server = ServerState(searcher, config, texts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await server.batcher.close()

    app = FastAPI(title="densekit search", version="1", lifespan=lifespan,
                  description="Dense retrieval over a FAISS index. Every route but /health needs the API key "
                              "when the server has one (Authorization: Bearer <key> or X-API-Key).")
    app.router.route_class = JSONRoute
    app.openapi = openapi_with_limits(app, config)
    app.state.server = server
    app.add_middleware(GuardMiddleware, config=config, metrics=server.metrics)
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    def swaps_allowed() -> None:
        if not config.allow_swap:
            raise HTTPException(403, "index swaps are disabled on this server")

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
              responses=_responses(SEARCH_REFUSALS),
              summary="search the index with one or many text queries")
    async def search(body: Annotated[SearchRequest, Depends(search_limits(config))]) -> SearchResponse:
        serving = server.current  # this request searches this index even if a swap lands meanwhile
        if body.return_text and serving.texts is None:
            raise RequestValidationError([field_error(
                ("return_text",), "no_document_text", "this server has no document text (start it with "
                "--corpus), so return_text cannot be served", True)])
        return await server.search(body, serving)

    @app.get("/health", response_model=HealthResponse,
             summary="liveness and the index being served (no API key needed)")
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", index=server.current.describe(), model_dim=server.dim)

    @app.get("/metrics", response_class=PlainTextResponse, responses=_responses(GUARDED),
             summary="Prometheus metrics")
    async def metrics() -> Response:
        content, media_type = server.metrics.exposition()
        return Response(content, media_type=media_type)

    @app.post("/admin/swap", response_model=SwapResponse, dependencies=[Depends(swaps_allowed)],
              responses=_responses(SWAP_REFUSALS),
              summary="load another index folder and serve it; in-flight requests finish on the old one")
    async def swap(body: SwapRequest) -> SwapResponse:
        if not folder_exists(body.index):
            raise HTTPException(404, f"index folder not found: {body.index[:200]!r}")
        try:
            new = await asyncio.to_thread(server.swap, body.index, body.corpus)
        except SwapInProgress as exc:
            raise HTTPException(409, str(exc)) from None
        except DensekitError as exc:
            raise HTTPException(422, f"cannot serve that index: {exc}") from None
        except Exception as exc:  # anything else a folder on disk can hold (or lack): the old index keeps serving
            logger.exception("swap to %r failed", body.index[:200])
            raise HTTPException(422, f"cannot serve that index: {type(exc).__name__}: {str(exc)[:300]}") from None
        return SwapResponse(status="swapped", index=new.describe())

    return app


def app_for_folder(folder: str | Path, model, config: ServerConfig | None = None, **kwargs: Any) -> FastAPI:
    """``create_app`` for the index in ``folder`` served with ``model``, an already loaded query encoder
    (memory-mapped as ``config.mmap`` says). To load the model the index records, use
    ``create_app(Searcher.from_index(folder), config)``."""
    config = config or ServerConfig()
    index = DenseIndex.load(folder, mmap=use_mmap(folder, config.mmap))
    return create_app(Searcher(index, model), config, **kwargs)
