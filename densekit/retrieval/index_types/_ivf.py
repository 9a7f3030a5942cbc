"""Defaults shared by the IVF index types: how many lists, how many to probe, what to train on."""

from __future__ import annotations

import logging
import math

import numpy as np

from densekit.errors import ConfigError

logger = logging.getLogger(__name__)

MIN_POINTS_PER_LIST = 39  # below this FAISS k-means warns and the centroids are poor
MAX_POINTS_PER_LIST = 256  # FAISS k-means subsamples to this anyway; training on more is wasted time


def choose_nlist(n: int, nlist: int | None) -> int:
    """``4 * sqrt(N)`` lists by default, fewer for small corpora so every list gets 39+ training points."""
    if nlist is not None:
        if nlist < 1:
            raise ConfigError(f"nlist must be at least 1, got {nlist}")
        if nlist > n:
            advised = max(1, n // MIN_POINTS_PER_LIST)
            raise ConfigError(f"nlist={nlist} is more than the {n} vectors to index; use nlist <= {advised}")
        if n < nlist * MIN_POINTS_PER_LIST:
            logger.warning("nlist=%d wants at least %d vectors to train on, the corpus has %d; centroids will be "
                           "poor (nlist <= %d is advised)", nlist, nlist * MIN_POINTS_PER_LIST, n,
                           max(1, n // MIN_POINTS_PER_LIST))
        return nlist
    wanted = max(1, round(4 * math.sqrt(n)))
    chosen = max(1, min(wanted, n // MIN_POINTS_PER_LIST))
    if chosen < wanted:
        logger.info("corpus of %d vectors is small for nlist=%d (needs %d); using nlist=%d",
                    n, wanted, wanted * MIN_POINTS_PER_LIST, chosen)
    return chosen


def choose_nprobe(nlist: int, nprobe: int | None) -> int:
    """Enough lists probed for recall@10 >= 0.95 against exact search on real text embeddings (see docs/serving.md)."""
    if nprobe is None:
        return min(nlist, max(32, math.ceil(nlist / 8)))
    if not 1 <= nprobe <= nlist:
        raise ConfigError(f"nprobe must be between 1 and nlist={nlist}, got {nprobe}")
    return nprobe


def training_sample(vectors, nlist: int, train_size: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of a :class:`~densekit.retrieval.index.TrainingSet` for k-means (all of it when the
    corpus is small)."""
    size = min(vectors.count, train_size if train_size is not None else nlist * MAX_POINTS_PER_LIST)
    if size < nlist:
        raise ConfigError(f"train_size={size} is smaller than nlist={nlist}")
    sample = vectors.sample(size, seed)
    if len(sample) < nlist:
        raise ConfigError(f"the memory budget leaves {len(sample)} training vectors for nlist={nlist}; raise "
                          "--memory-budget or lower nlist")
    return sample
