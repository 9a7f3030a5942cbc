"""Index folders for corpora beyond RAM: IVF lists merged on disk, and indexes in parts served as one.

``build_index_folder`` trains the index type once, on a sample of the vectors, then fills it block by block:

* ``on_disk=True`` (IVF types): each block goes into its own copy of the trained index, written to a scratch
  file, and ``faiss.contrib.ondisk.merge_ondisk`` merges the blocks' inverted lists into one
  ``index.ivfdata`` (FAISS's ``OnDiskInvertedLists``) that the server memory-maps; RAM holds one block and
  the coarse quantizer, never the lists (FAISS's recipe for billion-scale indexes).
* ``parts=N``: the rows are cut into N contiguous ranges, each filled into its own copy of the trained index
  (``parts/part-NNN/``, on disk or not); :meth:`DenseIndex.load` serves them as one ``faiss.IndexShards``
  that searches the parts in parallel threads and numbers rows part after part. The parts share the trained
  quantizer, so N parts return what one index would.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk
from tqdm.auto import tqdm

from densekit.errors import ConfigError
from densekit.io import atomic_dir
from densekit.retrieval.ids import write_ids
from densekit.retrieval.index import DenseIndex, TrainingSet, add_rows, base_meta, index_builder, part_dir
from densekit.vectors.options import DEFAULT_BUDGET, parse_bytes, rows_within
from densekit.vectors.source import VectorSource

logger = logging.getLogger(__name__)


def check_on_disk(index: faiss.Index, index_type: str) -> None:
    """On-disk lists need a plain IVF index: no fast-scan blocks, no refinement stage held in RAM."""
    top = faiss.downcast_index(index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise ConfigError(f"--on-disk needs an IVF index type (ivf-flat, ivf-pq), not '{index_type}'")
    if isinstance(top, faiss.IndexRefine):
        raise ConfigError("--on-disk cannot keep ivf-pq's refinement vectors on disk; use --param refine=none")
    if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):
        raise ConfigError("--on-disk needs classic PQ codes (FAISS cannot merge fast-scan lists on disk); use "
                          "--param fast_scan=false")


def fill_on_disk(trained: faiss.Index, vectors: VectorSource, start: int, stop: int, target: Path,
                 scratch: Path, block_rows: int) -> faiss.Index:
    """Rows ``start:stop`` into ``trained``'s lists in ``target/index.ivfdata``, one block in memory at a time."""
    scratch.mkdir(parents=True, exist_ok=True)
    files = []
    for row, block in tqdm(vectors.blocks(block_rows, start, stop), desc="add blocks", mininterval=2.0,
                           total=-(-(stop - start) // block_rows), disable=stop - start <= 4 * block_rows):
        part = faiss.clone_index(trained)
        part.add_with_ids(block, np.arange(row - start, row - start + len(block), dtype=np.int64))
        path = scratch / f"block-{len(files):05d}.index"
        faiss.write_index(part, str(path))
        files.append(str(path))
        del part
    index = faiss.clone_index(trained)
    target.mkdir(parents=True, exist_ok=True)
    merge_ondisk(index, files, str(target / "index.ivfdata"))
    shutil.rmtree(scratch)
    return index


def row_ranges(count: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, count, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def build_index_folder(vectors: VectorSource, output: str | Path, index_type: str = "flat",
                       params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None, *,
                       on_disk: bool = False, parts: int = 1, memory_budget: int | None = None) -> DenseIndex:
    """Write the index folder ``output`` over ``vectors`` (see the module docstring) and return it loaded
    (memory-mapped)."""
    params = dict(params or {})
    builder = index_builder(index_type, params)
    if parts < 1 or parts > vectors.count:
        raise ConfigError(f"--parts must be between 1 and the {vectors.count} vectors, got {parts}")
    budget = memory_budget or parse_bytes(DEFAULT_BUDGET)
    block_rows = rows_within(budget, vectors.dim)
    start_time = time.perf_counter()
    trained = builder(TrainingSet(vectors, block_rows), **params)
    if on_disk:
        check_on_disk(trained, index_type)
    ranges = row_ranges(vectors.count, parts)
    with atomic_dir(output) as tmp:
        for i, (start, stop) in enumerate(ranges):
            target = tmp / part_dir(i) if parts > 1 else tmp
            target.mkdir(parents=True, exist_ok=True)
            if on_disk:
                index = fill_on_disk(trained, vectors, start, stop, target, tmp / ".blocks", block_rows)
            else:
                index = faiss.clone_index(trained)
                add_rows(index, vectors, block_rows, start, stop)
            faiss.write_index(index, str(target / "index.faiss"))
            del index
        write_ids(tmp, vectors.ids)
        full_meta = base_meta(trained, index_type, params, vectors, time.perf_counter() - start_time)
        full_meta.update({"on_disk": on_disk, **({"parts": [list(r) for r in ranges]} if parts > 1 else {}),
                          **(meta or {})})
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, ensure_ascii=False) + "\n")
    logger.info("built %s over %d vectors in %.1f s (%s)", index_type, vectors.count,
                time.perf_counter() - start_time, ", ".join(filter(None, [
                    "lists on disk" if on_disk else "", f"{parts} parts" if parts > 1 else ""])) or "in memory")
    return DenseIndex.load(output, mmap=True)


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
