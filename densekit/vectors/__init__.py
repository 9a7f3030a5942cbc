"""Corpus vectors at any scale: the embedding store (Arrow shards + manifest), how a corpus is encoded into it
(in parallel, resumable), the in-memory alternative for small corpora, and the Parquet export."""

from densekit.vectors.encode import corpus_vectors, encode_cached, encode_store, store_folder
from densekit.vectors.options import ScaleOptions, parse_bytes
from densekit.vectors.source import ArrayVectors, VectorSource, as_source
from densekit.vectors.store import EmbeddingStore

__all__ = ["ArrayVectors", "EmbeddingStore", "ScaleOptions", "VectorSource", "as_source", "corpus_vectors",
           "encode_cached", "encode_store", "parse_bytes", "store_folder"]
