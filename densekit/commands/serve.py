"""densekit serve: put a model and its index behind HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option
from densekit.serving.config import ServerConfig

NAME = "serve"
HELP = "serve an index over HTTP: POST /search, GET /health, GET /metrics, POST /admin/swap, /docs"

logger = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    """what to serve, and where"""

    index: str = option(help="index folder written by densekit index")
    model: str | None = option(None, help="query encoder (default: the model recorded in the index)")
    corpus: str | None = option(None, help="BEIR folder or corpus.jsonl(.gz) for return_text "
                                           "(default: the corpus recorded in the index)")
    with_text: bool = option(True, flag="--no-text", help="do not load document text (return_text is refused)")
    host: str = option("127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, help="port to bind")
    threads: int | None = option(None, help="torch and FAISS CPU threads (default: theirs; 1 is faster on a CPU "
                                            "shared with other jobs)")

    def __post_init__(self) -> None:
        if self.port < 1:
            raise ConfigError("--port must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be at least 1")


OPTIONS = (ServeOptions, ServerConfig, EncoderOptions)


def run(opts: ServeOptions, config: ServerConfig, encoder: EncoderOptions) -> int:
    import uvicorn

    from densekit.retrieval.searcher import Searcher
    from densekit.serving.app import create_app
    from densekit.serving.protocol import protocol_with_deadline
    from densekit.serving.state import use_mmap

    if opts.threads is not None:
        import faiss
        import torch

        torch.set_num_threads(opts.threads)
        faiss.omp_set_num_threads(opts.threads)
    searcher = Searcher.from_index(opts.index, opts.model, encoder, mmap=use_mmap(opts.index, config.mmap))
    app = create_app(searcher, config, corpus=opts.corpus, with_text=opts.with_text)
    if opts.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning("serving on %s without an API key: anyone who can reach it can search and swap indexes",
                       opts.host)
    # one process: the model and index are loaded once; concurrency comes from the micro-batcher
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning", timeout_graceful_shutdown=10,
                http=protocol_with_deadline(config.read_timeout))
    return 0
