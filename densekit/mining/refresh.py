"""Re-mine hard negatives with a training checkpoint: the ANCE refresh, run as a separate process.

Xiong et al., "Approximate Nearest Neighbor Negative Contrastive Learning for Dense Text Retrieval",
ICLR 2021. While the trainer keeps going, this worker loads the newest checkpoint, re-encodes a share of
the corpus (``fraction``; the rest keeps its previous embeddings, a rotating slice so that every document
is refreshed in turn), rebuilds the FAISS index and mines new negatives with the same code and options as
``densekit mine`` (retriever ``dense`` over the refreshed embeddings, any sampler, teacher denoising). It
writes ``negatives-NNNN.json`` atomically; the trainer swaps them in when it sees the file.

    python -m densekit.mining.refresh JOB.json

``JOB.json``: ``checkpoint``, ``data`` and ``split`` (a BEIR folder or name), ``state_dir``, ``refresh``
(the refresh number), ``fraction``, ``max_seq_length``, ``batch_size``, ``threads``, ``base_model`` (encodes
the corpus on the first refresh when no embeddings exist yet; its cache in ``cache_dir`` is reused),
``cache_dir`` and ``mine`` (``num_negatives``, ``window``, ``sampler``, ``sampler_options``, ``seed``,
``denoise``: the fields of :class:`densekit.mining.denoise.DenoiseConfig`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError

logger = logging.getLogger(__name__)


def refresh_slice(n_docs: int, fraction: float, refresh: int) -> np.ndarray:
    """Rows re-encoded by refresh number ``refresh``: a rotating window of ``ceil(fraction * n_docs)`` rows."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"refresh fraction must be in (0, 1], got {fraction}")
    count = min(n_docs, math.ceil(fraction * n_docs))
    return (refresh * count + np.arange(count)) % n_docs


def run_refresh(job: dict[str, Any]) -> dict[str, Any]:
    from densekit.data.beir import doc_text, load_beir
    from densekit.embeddings import encode_cached, save_npy
    from densekit.io import atomic_write_json
    from densekit.mining.denoise import DenoiseConfig
    from densekit.mining.miner import MineConfig, mine
    from densekit.models import encode, load_model

    start = time.perf_counter()
    state = Path(job["state_dir"])
    refresh = int(job["refresh"])
    dataset = load_beir(job["data"], job.get("split", "train"))
    texts = [doc_text(dataset.corpus[d]) for d in dataset.corpus]
    batch_size = int(job.get("batch_size", 64))
    emb_path = state / "doc_embeddings.npy"
    if emb_path.exists():
        embeddings = np.array(np.load(emb_path, allow_pickle=False))
        if embeddings.shape[0] != len(texts):
            raise ConfigError(f"{emb_path} holds {embeddings.shape[0]} rows for a corpus of {len(texts)}")
    else:
        base = load_model(job.get("base_model") or job["checkpoint"], max_seq_length=job.get("max_seq_length"))
        embeddings = encode_cached(base, texts, job.get("cache_dir"), batch_size=batch_size, desc="encode corpus")
        del base
    model = load_model(job["checkpoint"], max_seq_length=job.get("max_seq_length"))
    rows = refresh_slice(len(texts), float(job.get("fraction", 1.0)), refresh)
    embeddings[rows] = encode(model, [texts[i] for i in rows], batch_size=batch_size, desc="re-encode corpus")
    save_npy(emb_path, embeddings)
    encode_s = time.perf_counter() - start

    options = job.get("mine", {})
    config = MineConfig(retrievers=["dense"], sampler=options.get("sampler", "top"),
                        num_negatives=int(options.get("num_negatives", 2)),
                        window=tuple(options.get("window", (10, 50))), seed=int(options.get("seed", 42)) + refresh,
                        sampler_options=options.get("sampler_options", {}),
                        denoise=DenoiseConfig(**options.get("denoise", {})),
                        retriever_options={"dense": {"model": job["checkpoint"], "batch_size": batch_size,
                                                     "corpus_embeddings": str(emb_path),
                                                     "max_seq_length": job.get("max_seq_length")}},
                        cache_dir=job.get("cache_dir"))
    records = mine(dataset, config)
    negatives: dict[str, list[str]] = {}
    for record in records:
        negatives.setdefault(record["query_id"], [n["doc_id"] for n in record["negatives"]])
    result = {"refresh": refresh, "checkpoint": job["checkpoint"], "negatives": negatives,
              "stats": {"seconds": round(time.perf_counter() - start, 2), "encode_seconds": round(encode_s, 2),
                        "docs_encoded": len(rows), "docs_total": len(texts), "queries": len(negatives),
                        "denoised": bool(options.get("denoise", {}).get("teacher"))}}
    atomic_write_json(state / f"negatives-{refresh:04d}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m densekit.mining.refresh JOB.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))
    result = run_refresh(job)
    print(json.dumps(result["stats"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
