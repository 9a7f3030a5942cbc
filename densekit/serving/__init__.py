"""The HTTP search server behind ``densekit serve``, one concern a module.

* :mod:`~densekit.serving.config`: ``ServerConfig``, the server's options (limits, API key, swap, mmap, GPU)
* :mod:`~densekit.serving.schemas`: the pydantic request and response bodies (the OpenAPI schema comes from them)
* :mod:`~densekit.serving.validation`: JSON bodies in, bad input out: the config-dependent limits and the one
  handler that turns validation errors into ``{"detail": "field 'k': ..."}``
* :mod:`~densekit.serving.metrics`: the Prometheus registry
* :mod:`~densekit.serving.batcher`: the micro-batcher (one encode + one FAISS search per batch of requests)
* :mod:`~densekit.serving.state`: the immutable ``ServingIndex``, document text, and the atomic swap
* :mod:`~densekit.serving.guard`: ASGI middleware: API key, body-size limit, per-route metrics
* :mod:`~densekit.serving.app`: ``create_app(searcher, config)`` and the routes

Importing this package (or ``config``) does not import FastAPI, so the CLI starts without the ``serve`` extra.
"""
