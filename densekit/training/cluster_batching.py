"""Cluster-grouped batches, so in-batch negatives are hard, and in-batch false-negative masking.

NGAME (Dahiya et al., "NGAME: Negative Mining-aware Mini-batching for Extreme Classification",
WSDM 2023) and B3 (Thirukovalluru et al., "Breaking the Batch Barrier (B3) of Contrastive Learning
via Smart Batch Mining", 2025) fill each batch with related examples instead of random ones: the
other queries' positives then act as hard negatives for free. Here the training queries are
clustered with spherical k-means and the clusters are visited along a nearest-centroid chain, so a
batch holds one cluster and, when it runs out, the most similar next one.

Related examples in one batch make false negatives likely (two queries citing the same paper);
:func:`mask_in_batch_false_negatives` removes in-batch candidates that score at least as high as
the anchor's own positive minus a margin (the GISTEmbed rule, with the model as its own guide).

Use with sentence-transformers' trainer::

    labels, centroids = cluster_examples(query_embeddings, n_clusters=64)
    args = SentenceTransformerTrainingArguments(..., batch_sampler=cluster_batch_sampler(labels, centroids))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

try:  # sentence-transformers >= 6 moved the samplers into ``base``
    from sentence_transformers.base.sampler import DefaultBatchSampler
except ImportError:  # pragma: no cover - older sentence-transformers
    from sentence_transformers.sampler import DefaultBatchSampler

from densekit.errors import ConfigError, DataError
from densekit.mining.clustering import assign, centroid_chain, kmeans
from densekit.training.losses.base import distributed_world


def cluster_examples(embeddings: np.ndarray, n_clusters: int | None = None, seed: int = 42,
                     niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids): a k-means cluster id per training example (from its query embedding)."""
    centroids = kmeans(embeddings, n_clusters, niter=niter, seed=seed)
    return assign(embeddings, centroids), centroids


class ClusterGroupedBatchSampler(DefaultBatchSampler):
    """Batches drawn cluster by cluster along a nearest-centroid chain; no duplicate text within a batch.

    Each epoch reshuffles the examples inside every cluster, starts the chain at a random cluster and
    finally shuffles the order of the batches (each batch stays cluster-coherent).

    Under ``torchrun`` the batches are built at the size of the global batch (per-device batch x processes)
    and each is yielded as that many per-device slices in rank order; the distributed wrapper (accelerate's
    ``BatchSamplerShard``) deals batch ``i`` to rank ``i % processes``, so every step's global batch is one
    cluster-coherent batch, the very batch a single process would train on at the global batch size. Every rank
    builds the same batches (the seed, the epoch and the texts' hashes are the same everywhere) and ``__len__``
    is the number the epoch really yields, so every rank gets the same number of batches (a length that differs
    from what a sampler yields is what hangs multi-GPU sentence-transformers runs).
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0, *, labels: Sequence[int],
                 centroids: np.ndarray | None = None,
                 dedupe_columns: Sequence[str] = ("anchor", "positive")) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(dataset):
            raise DataError(f"{len(self.labels)} cluster labels for {len(dataset)} training examples")
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        self.centroids = centroids
        columns = [c for c in dedupe_columns if c in getattr(dataset, "column_names", [])]
        # texts are compared by a stable hash (the same in every process): cheap to hold for millions of rows
        self.keys = [[_text_key(t) for t in dataset[c]] for c in columns]
        self.processes = distributed_world()[1]
        self.global_batch = batch_size * self.processes
        self._cached: tuple[int, list[list[int]]] | None = None

    def cluster_order(self, rng: np.random.Generator) -> list[int]:
        present = np.unique(self.labels)
        if self.centroids is None or len(present) < 2:
            return [int(c) for c in rng.permutation(present)]
        chain = centroid_chain(self.centroids, start=int(rng.choice(present)))
        has = set(present.tolist())
        return [c for c in chain if c in has]

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in the order they are yielded (computed once per epoch)."""
        epoch = int(getattr(self, "epoch", 0))
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._build(epoch))
        return self._cached[1]

    def __iter__(self):
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())

    def _build(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches, each split into per-device slices (rank order)."""
        out: list[list[int]] = []
        for batch in self._global_batches(epoch):
            out.extend(chunk.tolist() for chunk in np.array_split(np.array(batch, dtype=np.int64), self.processes))
        return out

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        members: dict[int, np.ndarray] = {}
        for c in np.unique(self.labels):
            idx = np.flatnonzero(self.labels == c)
            members[int(c)] = rng.permutation(idx)
        stream = [int(i) for c in self.cluster_order(rng) for i in members[c]]
        size = self.global_batch
        batches: list[list[int]] = []
        batch: list[int] = []
        seen: set = set()
        deferred: list[int] = []
        for i in stream:
            keys = {col[i] for col in self.keys}
            if keys & seen:
                deferred.append(i)  # a duplicate text: try it in the next batch
                continue
            batch.append(i)
            seen |= keys
            if len(batch) == size:
                batches.append(batch)
                batch, seen = [], set()
                retry, deferred = deferred, []
                for j in retry:
                    keys = {col[j] for col in self.keys}
                    if keys & seen or len(batch) == size:
                        deferred.append(j)
                    else:
                        batch.append(j)
                        seen |= keys
        rest = batch + deferred
        for start in range(0, len(rest), size):
            batches.append(rest[start:start + size])
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        return [batches[b] for b in rng.permutation(len(batches))]


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


class ClusterBatchSamplerFactory:
    """Builds the sampler for the trainer; a class, not a closure, because checkpoints pickle the training args."""

    def __init__(self, labels: Sequence[int], centroids: np.ndarray | None = None,
                 dedupe_columns: Sequence[str] = ("anchor", "positive")) -> None:
        self.labels = list(map(int, labels))
        self.centroids = centroids
        self.dedupe_columns = tuple(dedupe_columns)

    def __call__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return ClusterGroupedBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                          labels=self.labels, centroids=self.centroids,
                                          dedupe_columns=self.dedupe_columns)

    def __repr__(self) -> str:  # shown in the trainer's logged arguments
        return f"ClusterBatchSamplerFactory({len(set(self.labels))} clusters, {len(self.labels)} examples)"


def cluster_batch_sampler(labels: Sequence[int], centroids: np.ndarray | None = None,
                          dedupe_columns: Sequence[str] = ("anchor", "positive")) -> Callable:
    """A factory for ``SentenceTransformerTrainingArguments(batch_sampler=...)``."""
    return ClusterBatchSamplerFactory(labels, centroids, dedupe_columns)


def cluster_count(setting: int | str, n_examples: int, batch_size: int) -> int:
    if str(setting) == "auto":
        return max(2, round(n_examples / batch_size))
    try:
        k = int(setting)
    except (TypeError, ValueError):
        raise ConfigError(f"cluster_batches must be a number of clusters or 'auto', got '{setting}'") from None
    if not 2 <= k <= n_examples:
        raise ConfigError(f"cluster_batches must be between 2 and the number of examples ({n_examples}), got {k}")
    return k


def cluster_sampler(model, dataset, setting: int | str, batch_size: int, seed: int, method: str = "kmeans",
                    b3_window: tuple[int, int] = (10, 50), b3_community: int = 8) -> ClusterBatchSamplerFactory:
    """A batch sampler factory grouping examples by clusters: k-means of their queries' embeddings (``auto``: one
    cluster per global batch, ``batch_size`` per device x processes), or B3's METIS communities
    (:mod:`densekit.training.b3`)."""
    import logging

    rank, world = distributed_world()
    result = None
    if rank == 0:  # clustered once, on rank 0: every rank must build the very same batches
        anchors = model.encode(dataset["anchor"], batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=True)
        if method == "b3":
            from densekit.training.b3 import b3_communities

            targets = model.encode(dataset["positive"], batch_size=64, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=True)
            result = (b3_communities(anchors, targets, b3_window, b3_community, seed), None)
        else:
            result = cluster_examples(anchors, cluster_count(setting, len(dataset), batch_size * world), seed=seed)
    if world > 1:
        import torch.distributed as dist

        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    labels, centroids = result
    logging.getLogger(__name__).info("cluster-grouped batches (%s): %d groups over %d examples", method,
                                     len(set(labels.tolist())), len(dataset))
    return cluster_batch_sampler(labels, centroids)


def mask_in_batch_false_negatives(scores: Tensor, targets: Tensor, margin: float = 0.0) -> Tensor:
    """Set to -inf every candidate (other than the target) scoring ``>= score(target) - margin``.

    ``scores`` is anchors x candidates (e.g. cosine), ``targets`` the column of each anchor's positive.
    A copy of the positive (same text, so the same score) is always masked; ``margin > 0`` also masks
    near-duplicates. Apply before the temperature scaling and the cross-entropy.
    """
    if scores.ndim != 2 or targets.ndim != 1 or len(targets) != scores.shape[0]:
        raise ValueError("scores must be (anchors, candidates) and targets one index per anchor")
    positive = scores.gather(1, targets[:, None])
    mask = scores >= positive - margin
    mask[torch.arange(len(targets), device=scores.device), targets] = False
    return scores.masked_fill(mask, float("-inf"))
