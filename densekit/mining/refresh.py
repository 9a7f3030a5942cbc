"""Re-mine hard negatives with a training checkpoint: the ANCE refresh, run as a separate process.

Xiong et al., "Approximate Nearest Neighbor Negative Contrastive Learning for Dense Text Retrieval",
ICLR 2021. While the trainer keeps going, this worker loads the newest checkpoint, re-encodes a share of
the corpus (``fraction``; the rest keeps its previous embeddings, a rotating slice so that every document
is refreshed in turn) into its embedding store (``<state>/embeddings``, see :mod:`densekit.vectors`: only the
shards holding refreshed rows are rewritten, one shard in memory at a time) and mines new negatives with the
same code and options as ``densekit mine`` (retriever ``dense`` streaming that store, any sampler, teacher
denoising). It writes ``negatives-NNNN.json`` atomically; the trainer swaps them in when it sees the file.

    python -m densekit.mining.refresh JOB.json

``JOB.json`` holds a :class:`RefreshJob` (the trainer writes it; both sides read it through that one class).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError, DataError, DensekitError
from densekit.mining.denoise import DenoiseConfig
from densekit.mining.miner import MineConfig
from densekit.mining.near_duplicates import DEFAULT_THRESHOLD
from densekit.vectors.encode import DEFAULT_SHARD_SIZE
from densekit.vectors.shards import Plan, complete_shard, finalize, write_plan, write_shard
from densekit.vectors.store import EmbeddingStore

logger = logging.getLogger(__name__)


def refresh_slice(n_docs: int, fraction: float, refresh: int) -> np.ndarray:
    """Rows re-encoded by refresh number ``refresh``: a rotating window of ``ceil(fraction * n_docs)`` rows."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"refresh fraction must be in (0, 1], got {fraction}")
    count = min(n_docs, math.ceil(fraction * n_docs))
    return (refresh * count + np.arange(count)) % n_docs


@dataclass
class RefreshJob:
    """What one refresh does; written by the trainer as ``job-NNNN.json``, read by the worker."""

    data: str  # BEIR folder or name
    split: str
    state_dir: str
    base_model: str  # encodes the corpus on the first refresh when no embeddings exist yet
    num_negatives: int
    checkpoint: str = ""  # the model to re-encode with (set at each launch)
    refresh: int = 0  # the refresh number
    fraction: float = 1.0
    max_seq_length: int | None = None
    batch_size: int = 64
    threads: int = 1
    cache_dir: str | None = None
    backend: str = "auto"  # the corpus encoder's engine (densekit.encoders)
    window: tuple[int, int] = (10, 50)
    sampler: str = "top"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    near_duplicate_threshold: float = DEFAULT_THRESHOLD
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["window"] = list(self.window)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: str = "job") -> RefreshJob:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise DataError(f"unknown field(s) {', '.join(unknown)}", path=path, field=unknown[0])
        values = dict(obj)
        values["window"] = tuple(values.get("window", (10, 50)))
        try:
            values["denoise"] = DenoiseConfig(**values.get("denoise", {}))
            return cls(**values)
        except TypeError as exc:
            raise DataError(str(exc), path=path) from None

    @classmethod
    def read(cls, path: str | Path) -> RefreshJob:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")), str(path))

    def mine_config(self, embeddings: Path) -> MineConfig:
        """Mining as ``densekit mine`` does it, over the refreshed embedding store, reseeded per refresh."""
        return MineConfig(retrievers=["dense"], sampler=self.sampler, num_negatives=self.num_negatives,
                          window=self.window, seed=self.seed + self.refresh, sampler_options=self.sampler_options,
                          near_duplicate_threshold=self.near_duplicate_threshold, denoise=self.denoise,
                          retriever_options={"dense": {"model": self.checkpoint, "batch_size": self.batch_size,
                                                       "corpus_embeddings": str(embeddings),
                                                       "max_seq_length": self.max_seq_length}},
                          cache_dir=self.cache_dir)


REFRESH_MODEL = "ance-refresh"  # the refresh store mixes checkpoints; the manifest's extra says which refresh


def refresh_store(source, folder: Path, rows, refreshed: np.ndarray, model, batch_size: int = 64,
                  shard_size: int = DEFAULT_SHARD_SIZE) -> EmbeddingStore:
    """Write the store in ``folder``: the vectors of ``source`` with ``refreshed`` rows re-encoded by ``model``.

    ``source`` may be that same store (later refreshes): then only its shards holding refreshed rows are
    rewritten, each atomically, one in memory at a time."""
    from densekit.models import encode

    plan = write_plan(folder, Plan(model=REFRESH_MODEL, corpus=rows.fingerprint, count=len(rows),
                                   shard_size=shard_size))
    # an interrupted rewrite leaves an unfinished store (finished by the next refresh), never a wrong manifest
    (folder / "manifest.json").unlink(missing_ok=True)
    refreshed = np.sort(refreshed)
    for shard in range(plan.num_shards):
        start, stop = plan.rows(shard)
        local = refreshed[(refreshed >= start) & (refreshed < stop)] - start
        if len(local) == 0 and complete_shard(folder, plan, shard) is not None:
            continue
        # not verified: a shard of this folder may already be rewritten by an interrupted run of this refresh
        vectors = next(source.blocks(stop - start, start, stop, verify=False))[1]
        if len(local):
            texts = rows.text_range(start, stop)
            vectors[local] = encode(model, [texts[i] for i in local], batch_size=batch_size, show_progress=False)
        write_shard(folder, plan, shard, rows.id_range(start, stop), vectors)
    manifest = finalize(folder, {"refreshed_rows": int(len(refreshed))})
    assert manifest is not None
    return EmbeddingStore.open(folder)


def earlier_store(folder: Path, rows) -> EmbeddingStore | None:
    """The store the previous refreshes left (finished again if one was interrupted after its last shard), or None
    before the first complete refresh."""
    if not (folder / "plan.json").exists():
        return None
    if not (folder / "manifest.json").exists() and finalize(folder) is None:
        return None
    return EmbeddingStore.open(folder, corpus=rows.fingerprint, count=len(rows))


def run_refresh(job: RefreshJob) -> dict[str, Any]:
    from densekit.data.beir import load_beir
    from densekit.data.corpus import corpus_rows
    from densekit.encoders import load_encoder
    from densekit.io import atomic_write_json
    from densekit.mining.miner import mine
    from densekit.vectors import corpus_vectors

    start = time.perf_counter()
    state = Path(job.state_dir)
    dataset = load_beir(job.data, job.split, cache_dir=job.cache_dir)
    rows = corpus_rows(dataset.corpus)
    store_dir = state / "embeddings"
    source = earlier_store(store_dir, rows)
    if source is None:  # first refresh: start from the base model's vectors (the cache's, when mining made them)
        base = load_encoder(job.base_model, job.max_seq_length, job.backend, job.cache_dir)
        source = corpus_vectors(base, dataset.corpus, job.cache_dir, batch_size=job.batch_size, desc="encode corpus")
        del base
    model = load_encoder(job.checkpoint, job.max_seq_length, job.backend, job.cache_dir)
    refreshed = refresh_slice(len(rows), job.fraction, job.refresh)
    refresh_store(source, store_dir, rows, refreshed, model, job.batch_size)
    encode_s = time.perf_counter() - start

    records = mine(dataset, job.mine_config(store_dir))
    negatives: dict[str, list[str]] = {}
    scores: dict[str, dict[str, dict]] = {}  # with a teacher: its score of each query's positives and negatives
    for record in records:
        negatives.setdefault(record.query_id, record.negative_ids)
        if job.denoise.enabled and record.positive_id is not None:
            entry = scores.setdefault(record.query_id, {"positives": {}, "negatives": {}})
            entry["positives"][record.positive_id] = record.audit.get("positive_teacher_score")
            entry["negatives"].update({n.doc_id: n.teacher_score for n in record.negatives})
    result = {"refresh": job.refresh, "checkpoint": job.checkpoint, "negatives": negatives,
              **({"teacher_scores": scores} if scores else {}),
              "stats": {"seconds": round(time.perf_counter() - start, 2), "encode_seconds": round(encode_s, 2),
                        "docs_encoded": len(refreshed), "docs_total": len(rows), "queries": len(negatives),
                        "denoised": job.denoise.enabled}}
    atomic_write_json(state / f"negatives-{job.refresh:04d}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    from densekit.lifecycle import bind_to_launcher

    bind_to_launcher()  # started by a trainer: a refresh nobody will read stops when the trainer dies
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m densekit.mining.refresh JOB.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        job = RefreshJob.read(argv[0])
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        result = run_refresh(job)
    except DensekitError as exc:
        print(f"refresh: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["stats"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
