"""Move FAISS indexes to the GPU when faiss was built with GPU support (faiss-gpu), else do nothing.

faiss-cpu has no ``StandardGpuResources`` and ``get_num_gpus()`` returns 0, so every function here is a
no-op there. Index types faiss cannot run on a GPU (HNSW, IVF lists on disk) stay on the CPU.

With several GPUs an index is either *sharded* (each GPU holds 1/N of the vectors; N times the capacity, every
query goes to every GPU) or *replicated* (each GPU holds all of it; N times the query throughput);
``fp16`` stores vectors / lookup tables in half precision (half the GPU memory, scores to ~1e-3).
"""

from __future__ import annotations

import logging

import faiss

logger = logging.getLogger(__name__)


def gpu_count() -> int:
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:  # a GPU build on a machine without a driver
        return 0


def is_gpu_index(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def to_gpu(index: faiss.Index, enabled: bool = True, shard: bool = True, fp16: bool = False) -> faiss.Index:
    """A GPU copy of ``index`` over all visible GPUs (sharded across them, or replicated on each), or ``index``
    itself when that is not possible."""
    if not enabled or gpu_count() == 0 or is_gpu_index(index):
        return index
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = shard
        options.useFloat16 = fp16
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError as exc:  # e.g. "not implemented for this type of index" (HNSW)
        logger.info("keeping %s on the CPU: %s", type(index).__name__, exc)
        return index


def to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if is_gpu_index(index) and hasattr(faiss, "index_gpu_to_cpu") else index
