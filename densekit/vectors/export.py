"""Export a store as Parquet (``id``, ``vector`` float32): the form vector databases bulk-import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from densekit.io import atomic_open
from densekit.vectors.store import EmbeddingStore


def export_parquet(store: EmbeddingStore, folder: str | Path) -> list[Path]:
    """One ``part-NNNNN.parquet`` per shard in ``folder`` (each written atomically); float16 stores are widened
    to float32, which is what importers expect. The schema metadata records the model, corpus and dim."""
    folder = Path(folder)
    plan = store.manifest.plan
    metadata = {"densekit": json.dumps({"model": plan.model, "model_name": plan.model_name, "corpus": plan.corpus,
                                        "dim": store.dim, "count": store.count, "metric": "inner_product"})}
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), store.dim))], metadata=metadata)
    written = []
    shards = store.manifest.shards
    for i, _ in enumerate(tqdm(shards, desc="export parquet", disable=len(shards) < 4)):
        vectors = store.shard_vectors(i)
        ids = store.ids.shard_column(i)
        column = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), store.dim)
        path = folder / f"part-{i:05d}.parquet"
        with atomic_open(path, "wb") as handle:
            pq.write_table(pa.table([ids, column], schema=schema), handle)
        written.append(path)
    return written
