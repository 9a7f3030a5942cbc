"""densekit: train dense retrievers and sentence embeddings, mine hard negatives, serve FAISS search."""

__version__ = "0.1.0"
