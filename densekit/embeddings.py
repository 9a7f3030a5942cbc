"""Corpus embeddings cached on disk: a second run with the same model and texts does not re-encode.

Encoding is done in shards that are each written atomically, so an interrupted run resumes at
the first missing shard. Files are plain ``.npy`` (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from densekit.io import atomic_open, atomic_write_json
from densekit.models import encode, model_fingerprint, texts_fingerprint

logger = logging.getLogger(__name__)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def encode_cached(model, texts: list[str], cache_dir: str | Path | None, batch_size: int = 64, bf16: bool = False,
                  shard_size: int = 8192, desc: str = "encode") -> np.ndarray:
    """Encode ``texts`` (or load them from ``cache_dir``); ``cache_dir=None`` disables the cache."""
    if cache_dir is None:
        return encode(model, texts, batch_size=batch_size, bf16=bf16)
    key = f"{model_fingerprint(model)}-{texts_fingerprint(texts)}-{'bf16' if bf16 else 'fp32'}"
    folder = Path(cache_dir) / "embeddings" / key
    final = folder / "embeddings.npy"
    if final.exists():
        logger.info("embeddings cache hit: %s", folder)
        return np.load(final, allow_pickle=False)
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = (len(texts) + shard_size - 1) // shard_size
    shards = []
    for i in tqdm(range(n_shards), desc=f"{desc} ({len(texts)} texts)", disable=n_shards < 2):
        shard_path = folder / f"shard_{i:05d}.npy"
        if shard_path.exists():
            shards.append(np.load(shard_path, allow_pickle=False))
            continue
        emb = encode(model, texts[i * shard_size:(i + 1) * shard_size], batch_size=batch_size, bf16=bf16)
        save_npy(shard_path, emb)
        shards.append(emb)
    emb = np.concatenate(shards) if shards else encode(model, [], batch_size=batch_size)
    save_npy(final, emb)
    atomic_write_json(folder / "info.json", {"count": len(texts), "dim": int(emb.shape[1]), "bf16": bf16})
    for i in range(n_shards):
        (folder / f"shard_{i:05d}.npy").unlink(missing_ok=True)
    return emb


def cache_info(folder: Path) -> dict:
    return json.loads((folder / "info.json").read_text())
