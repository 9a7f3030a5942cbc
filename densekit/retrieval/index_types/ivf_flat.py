"""IVF-flat: k-means partitions the corpus into ``nlist`` lists; a query scans the ``nprobe`` nearest lists exactly.

Jégou et al., "Product quantization for nearest neighbor search" (TPAMI 2011) introduced the inverted-file
layout; with uncompressed vectors the only loss is from lists that are not probed.
"""

from __future__ import annotations

import logging

import faiss

from densekit.retrieval.gpu import to_cpu, to_gpu
from densekit.retrieval.index import INDEX_TYPES, TrainingSet
from densekit.retrieval.index_types._ivf import choose_nlist, choose_nprobe, training_sample

logger = logging.getLogger(__name__)


@INDEX_TYPES.register("ivf-flat")
def build_ivf_flat(vectors: TrainingSet, nlist: int | None = None, nprobe: int | None = None,
                   train_size: int | None = None, seed: int = 0, gpu: bool = True) -> faiss.Index:
    d = vectors.dim
    nlist = choose_nlist(vectors.count, nlist)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    work = to_gpu(index, enabled=gpu)
    work.train(training_sample(vectors, nlist, train_size, seed))
    index = to_cpu(work)
    index.nprobe = choose_nprobe(nlist, nprobe)
    logger.info("ivf-flat: nlist=%d nprobe=%d for %d vectors", nlist, index.nprobe, vectors.count)
    return index
