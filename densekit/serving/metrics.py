"""The server's Prometheus metrics, in a registry of its own (one per app, so tests and apps do not mix)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
