"""IVF-PQ: inverted lists of product-quantized codes, optionally re-ranked with better vectors.

Jégou et al., "Product quantization for nearest neighbor search" (TPAMI 2011); the default layout is FAISS's
4-bit "fast scan" PQ (André et al., "Quicker ADC", TPAMI 2019), whose codebooks train in seconds where 8-bit
ones take minutes on a CPU, and whose distance tables stay in SIMD registers. A 384-d float vector (1536 bytes)
becomes 96 bytes (``m = d / 2`` 4-bit codes; ``fast_scan=False`` gives classic ``m = d / 4`` 8-bit codes, same
size). PQ scores are coarse, so by default the ``k * k_factor`` best PQ candidates are re-scored with 8-bit
scalar-quantized vectors (``refine="sq8"``, +d bytes a vector); ``refine="flat"`` re-scores with the float
vectors (exact scores, no memory saved), ``refine="none"`` keeps only the codes (smallest, lowest recall).
"""

from __future__ import annotations

import logging
import math

import faiss

from densekit.errors import ConfigError
from densekit.retrieval.gpu import to_cpu, to_gpu
from densekit.retrieval.index import INDEX_TYPES, TrainingSet
from densekit.retrieval.index_types._ivf import (
    MIN_POINTS_PER_LIST,
    choose_nlist,
    choose_nprobe,
    training_sample,
)

logger = logging.getLogger(__name__)
REFINES = ("none", "sq8", "flat")


def default_subquantizers(d: int, bits: int) -> int:
    """Subquantizers for 2 bits a dimension: 2 dims a 4-bit code, 4 dims an 8-bit code (96 bytes for d=384)."""
    dims_per_code = 2 if bits <= 4 else 4
    return max(m for m in range(1, max(1, d // dims_per_code) + 1) if d % m == 0)


@INDEX_TYPES.register("ivf-pq")
def build_ivf_pq(vectors: TrainingSet, nlist: int | None = None, nprobe: int | None = None, m: int | None = None,
                 nbits: int | None = None, fast_scan: bool = True, refine: str = "sq8", k_factor: int = 4,
                 train_size: int | None = None, seed: int = 0, gpu: bool = True) -> faiss.Index:
    n, d = vectors.count, vectors.dim
    if refine not in REFINES:
        raise ConfigError(f"ivf-pq refine must be one of {', '.join(REFINES)}, got {refine!r}")
    if k_factor < 1:
        raise ConfigError(f"ivf-pq k_factor must be at least 1, got {k_factor}")
    if fast_scan and nbits not in (None, 4):
        raise ConfigError(f"ivf-pq fast_scan codes are 4-bit; got nbits={nbits} (set fast_scan=false for 8 bits)")
    nbits = (4 if fast_scan else 8) if nbits is None else nbits
    m = default_subquantizers(d, nbits) if m is None else m
    if d % m:
        raise ConfigError(f"ivf-pq m={m} must divide the embedding dimension {d}")
    # each PQ codebook has 2**nbits centroids and wants 39+ training points per centroid
    affordable = max(4, int(math.log2(max(2, n // MIN_POINTS_PER_LIST))))
    if nbits > affordable:
        logger.info("ivf-pq: %d vectors are too few to train %d-bit codebooks; using nbits=%d", n, nbits, affordable)
        nbits = affordable
    nlist = choose_nlist(n, nlist)
    if fast_scan:
        ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    else:
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    sample = training_sample(vectors, nlist, train_size, seed)
    work = to_gpu(ivf, enabled=gpu)
    work.train(sample)
    trained = to_cpu(work)
    trained.nprobe = choose_nprobe(nlist, nprobe)
    if refine == "none":
        return trained
    # IndexRefine wants both parts empty at construction; vectors are added through it so both get them
    if refine == "flat":
        index = faiss.IndexRefineFlat(trained)
    else:
        scalar = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        scalar.train(sample)
        index = faiss.IndexRefine(trained, scalar)
    index.is_trained = True
    index.k_factor = float(k_factor)
    return index
