"""FAISS indexes over encoded corpora, saved with their document ids and the model they came from."""

from densekit.retrieval.index import INDEX_TYPES, DenseIndex

__all__ = ["DenseIndex", "INDEX_TYPES"]
