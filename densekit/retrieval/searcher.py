"""A searcher: an index folder together with the query encoder that goes with it, returning typed hits.

After pyserini's ``FaissSearcher``: ``Searcher.from_index(folder)`` loads the index and the model recorded in
it (or the one given), at the sequence length the corpus was encoded with, so ``densekit search``, ``densekit
eval --index`` and ``densekit serve`` all pair an index with its encoder the same way::

    searcher = Searcher.from_index("runs/scifact/index")
    for hit in searcher.search("what causes scurvy", k=5):
        print(hit.doc_id, hit.score)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.models import encode
from densekit.retrieval.exhaustive import ExactScan
from densekit.retrieval.index import DenseIndex, Hit


def model_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


class Searcher:
    def __init__(self, index: DenseIndex | ExactScan, encoder, batch_size: int = 64, bf16: bool = False) -> None:
        dim = model_dim(encoder)
        if index.dim != dim:
            raise ConfigError(f"the index holds {index.dim}-dimensional vectors but the query encoder makes "
                              f"{dim}; pass the model that built the index")
        self.index, self.encoder = index, encoder
        self.batch_size, self.bf16 = batch_size, bf16

    @classmethod
    def from_index(cls, folder: str | Path, model: str | None = None, encoder: EncoderOptions | None = None,
                   mmap: bool = False) -> Searcher:
        """The index in ``folder`` with ``model`` (default: the query model the index records)."""
        index = DenseIndex.load(folder, mmap=mmap)
        name = model or index.query_model
        if not name:
            raise ConfigError(f"{Path(folder) / 'meta.json'} records no model; pass --model")
        encoder = encoder or EncoderOptions()
        loaded = encoder.load(name, max_seq_length=index.meta.get("max_seq_length"))
        return cls(index, loaded, batch_size=encoder.batch_size, bf16=encoder.bf16)

    def encode_queries(self, queries: list[str], show_progress: bool | None = None) -> np.ndarray:
        show = len(queries) > 256 if show_progress is None else show_progress
        return encode(self.encoder, queries, batch_size=self.batch_size, bf16=self.bf16, show_progress=show,
                      desc="encode queries")

    def search_vectors(self, embeddings: np.ndarray, k: int = 10) -> list[list[Hit]]:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        return self.index.search_hits(embeddings, k)

    def batch_search(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        return self.search_vectors(self.encode_queries(queries), k)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.batch_search([query], k)[0]
