"""B3's batch construction: communities of mutually hard examples from a preference graph, cut by METIS.

Thirukovalluru et al., "Breaking the Batch Barrier (B3) of Contrastive Learning via Smart Batch Mining", NeurIPS
2025 (github.com/raghavlite/B3; its Figure 1): a teacher ranks every training target for every training query; the
targets at ranks ``p .. p + m`` become edges of a sparse, undirected preference graph (the top ``p - 1`` are left
out as likely false negatives); METIS cuts the graph into communities of ``K`` examples; a batch of ``B`` is made
of ``B / K`` communities. Here the teacher is the starting model (its query and positive embeddings; top
``p + m`` by FAISS), the targets are the other rows' positives, and the batches come from
:class:`densekit.training.cluster_batching.ClusterGroupedBatchSampler` with the communities as its clusters
(visited in random order, so each batch joins ``B / K`` of them). The released code holds only the sampler; the
graph and METIS step follow the paper's figure (defaults there: ranks 30-130, K 32, batch 1024; ours are sized
for small training sets: ranks 10-50, K 8).
"""

from __future__ import annotations

import faiss
import numpy as np

from densekit.errors import ConfigError


def preference_edges(queries: np.ndarray, targets: np.ndarray, window: tuple[int, int]) -> list[set[int]]:
    """Row ``i``'s neighbours: the rows whose target ranks ``window[0] .. window[1]`` (1-based, row ``i``'s own
    target not counted) for query ``i``; made symmetric."""
    low, high = window
    if low < 1 or high < low:
        raise ConfigError(f"b3 window must satisfy 1 <= start <= end, got {low}-{high}")
    n = len(queries)
    index = faiss.IndexFlatIP(targets.shape[1])
    index.add(np.ascontiguousarray(targets, dtype=np.float32))
    _, ranked = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(n, high + 1))
    edges: list[set[int]] = [set() for _ in range(n)]
    for i, row in enumerate(ranked):
        others = [int(j) for j in row if j >= 0 and j != i]
        for j in others[low - 1:high]:
            edges[i].add(j)
            edges[j].add(i)
    return edges


def b3_communities(queries: np.ndarray, targets: np.ndarray, window: tuple[int, int] = (10, 50),
                   community: int = 8, seed: int = 0) -> np.ndarray:
    """A community id per training row: METIS parts of about ``community`` rows each."""
    import pymetis

    n = len(queries)
    if community < 1:
        raise ConfigError(f"b3 community size must be >= 1, got {community}")
    parts = max(1, round(n / community))
    if parts == 1:
        return np.zeros(n, dtype=np.int64)
    edges = preference_edges(queries, targets, window)
    options = pymetis.Options(seed=seed)
    _, membership = pymetis.part_graph(parts, adjacency=[sorted(e) for e in edges], options=options)
    return np.asarray(membership, dtype=np.int64)
