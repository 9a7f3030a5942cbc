"""densekit serve: put a model and its index behind HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import logging
import os

from densekit.errors import ConfigError

NAME = "serve"
HELP = "serve an index over HTTP: POST /search, GET /health, GET /metrics, POST /admin/swap, /docs"

logger = logging.getLogger(__name__)


def add_arguments(p) -> None:
    from densekit.retrieval.server import ServerConfig

    d = ServerConfig()
    p.add_argument("--index", required=True, help="index folder written by densekit index")
    p.add_argument("--model", default=None, help="query encoder (default: the model recorded in the index)")
    p.add_argument("--corpus", default=None,
                   help="BEIR folder or corpus.jsonl(.gz) for return_text (default: the corpus recorded in the index)")
    p.add_argument("--no-text", action="store_true", help="do not load document text (return_text is refused)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require this key on every route but /health (default: $DENSEKIT_API_KEY, else none)")
    p.add_argument("--no-swap", action="store_true", help="disable POST /admin/swap")
    p.add_argument("--max-k", type=int, default=d.max_k)
    p.add_argument("--max-queries", type=int, default=d.max_queries, help="queries per request")
    p.add_argument("--max-query-chars", type=int, default=d.max_query_chars)
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long to gather concurrent requests into one encode call")
    p.add_argument("--max-batch-queries", type=int, default=d.max_batch_queries, help="queries per encode call")
    p.add_argument("--mmap", choices=("auto", "on", "off"), default=d.mmap,
                   help="memory-map the index (auto: when index.faiss is over 1 GiB)")
    p.add_argument("--no-gpu", action="store_true", help="keep the index on the CPU even when faiss has GPUs")
    p.add_argument("--max-seq-length", type=int, default=None, help="truncate queries to this many tokens")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and FAISS CPU threads (default: theirs; 1 is faster on a CPU shared with other jobs)")


def config_from_args(args):
    from densekit.retrieval.server import ServerConfig

    for name in ("max_k", "max_queries", "max_query_chars", "max_body_bytes", "max_batch_queries", "port"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_wait_ms < 0:
        raise ConfigError("--batch-wait-ms must not be negative")
    return ServerConfig(max_k=args.max_k, max_queries=args.max_queries, max_query_chars=args.max_query_chars,
                        max_body_bytes=args.max_body_bytes, batch_wait_ms=args.batch_wait_ms,
                        max_batch_queries=args.max_batch_queries,
                        api_key=args.api_key or os.environ.get("DENSEKIT_API_KEY") or None,
                        allow_swap=not args.no_swap, mmap=args.mmap, gpu=not args.no_gpu)


def run(args) -> int:
    import json
    from pathlib import Path

    import uvicorn

    from densekit.models import load_model
    from densekit.retrieval.server import create_app

    config = config_from_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    meta_path = Path(args.index) / "meta.json"
    if not meta_path.exists():
        raise ConfigError(f"{args.index}: not an index folder (no meta.json); build one with densekit index")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model_name = args.model or meta.get("resolved") or meta.get("model")
    if not model_name:
        raise ConfigError(f"{meta_path} records no model; pass --model")
    model = load_model(model_name, max_seq_length=args.max_seq_length or meta.get("max_seq_length"))
    app = create_app(args.index, model, config, corpus=args.corpus, with_text=not args.no_text)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning("serving on %s without an API key: anyone who can reach it can search and swap indexes",
                       args.host)
    # one process: the model and index are loaded once; concurrency comes from the micro-batcher
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=10)
    return 0
