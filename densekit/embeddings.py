"""Corpus embeddings cached on disk: a second run with the same model and texts does not re-encode.

Encoding is done in shards that are each written atomically, so an interrupted run resumes at
the first missing shard. Files are plain ``.npy`` (loaded with ``allow_pickle=False``), each with a record of its
size and SHA-256 (:mod:`densekit.integrity`): a shard or result that does not match it is encoded again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from densekit.integrity import load_verified, save_array
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
    cached = load_verified(final, rows=len(texts))
    if cached is not None:
        logger.info("embeddings cache hit: %s", folder)
        _drop_shards(folder)  # left by a run killed between writing the result and cleaning up
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = (len(texts) + shard_size - 1) // shard_size
    shards = []
    for i in tqdm(range(n_shards), desc=f"{desc} ({len(texts)} texts)", disable=n_shards < 2):
        shard_path = folder / f"shard_{i:05d}.npy"
        chunk = texts[i * shard_size:(i + 1) * shard_size]
        emb = load_verified(shard_path, rows=len(chunk))
        if emb is None:
            emb = encode(model, chunk, batch_size=batch_size, bf16=bf16)
            save_array(shard_path, emb)
        shards.append(emb)
    emb = np.concatenate(shards) if shards else encode(model, [], batch_size=batch_size)
    save_array(final, emb)
    atomic_write_json(folder / "info.json", {"count": len(texts), "dim": int(emb.shape[1]), "bf16": bf16})
    _drop_shards(folder)
    return emb


def _drop_shards(folder: Path) -> None:
    for path in folder.glob("shard_*.npy*"):
        path.unlink(missing_ok=True)


def cache_info(folder: Path) -> dict:
    return json.loads((folder / "info.json").read_text())
