"""Spherical k-means over unit vectors with FAISS, numpy in and numpy out.

Training sees at most ``max_points_per_centroid * n_clusters`` points (FAISS subsamples), and
assignment runs in chunks, so memory stays at the size of the embeddings themselves.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from densekit.errors import ConfigError, DataError

MAX_POINTS_PER_CENTROID = 256  # FAISS k-means subsamples to this many points per centroid


def default_n_clusters(n_points: int) -> int:
    """sqrt(N), the usual IVF rule of thumb, at least 2 and at most N."""
    return max(2, min(n_points, int(round(math.sqrt(n_points)))))


def kmeans(embeddings: np.ndarray, n_clusters: int | None = None, niter: int = 20, seed: int = 42,
           max_points_per_centroid: int = MAX_POINTS_PER_CENTROID) -> np.ndarray:
    """Unit-norm centroids, shape ``(n_clusters, dim)``."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise DataError("k-means needs a non-empty 2-d embedding matrix")
    k = n_clusters or default_n_clusters(len(x))
    if k < 1:
        raise ConfigError(f"n_clusters must be at least 1, got {k}")
    k = min(k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True,
                      max_points_per_centroid=max_points_per_centroid, verbose=False)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, n: int = 1,
                      chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the ``n`` most similar centroids per row, best first."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    n = min(n, len(centroids))
    scores = np.empty((len(x), n), dtype=np.float32)
    ids = np.empty((len(x), n), dtype=np.int64)
    for start in range(0, len(x), chunk_size):
        chunk = np.ascontiguousarray(x[start:start + chunk_size], dtype=np.float32)
        scores[start:start + chunk_size], ids[start:start + chunk_size] = index.search(chunk, n)
    return scores, ids


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of each row."""
    return nearest_centroids(x, centroids, 1)[1][:, 0]


def centroid_chain(centroids: np.ndarray, start: int = 0) -> list[int]:
    """All cluster ids ordered so that consecutive clusters are near each other (greedy nearest neighbour)."""
    k = len(centroids)
    sims = centroids @ centroids.T
    visited = np.zeros(k, dtype=bool)
    order = [start]
    visited[start] = True
    for _ in range(k - 1):
        row = np.where(visited, -np.inf, sims[order[-1]])
        nxt = int(np.argmax(row))
        order.append(nxt)
        visited[nxt] = True
    return order
