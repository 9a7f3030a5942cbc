"""Encode a corpus into an embedding store: in shards, resumable, spread over processes and machines.

The corpus is cut into shards of ``shard_size`` rows; worker ``part`` of ``parts`` encodes the shards whose
number modulo ``parts`` is ``part`` (under ``torchrun`` these default to ``RANK`` and ``WORLD_SIZE``, in a Slurm
array to the task id and count given on the command line). Each shard is one sentence-transformers ``encode``
call on the same texts whichever worker runs it, so the store is the same as a one-process encode. A shard
already written is never encoded again, so a killed run resumes with the missing shards only. Whichever worker
finishes last (under a file lock) finds every shard present and writes the manifest.

With a cache folder, the store lives at ``<cache>/embeddings/<model>-<corpus>-<dtype>``: a second run with the
same model and corpus reads it instead of encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from densekit.data.corpus import corpus_rows
from densekit.io import locked
from densekit.models import encode, model_fingerprint, texts_fingerprint
from densekit.vectors.shards import Plan, complete_shard, finalize, read_plan, write_plan, write_shard
from densekit.vectors.source import ArrayVectors, VectorSource
from densekit.vectors.store import EmbeddingStore

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 16384


def store_folder(cache_dir: str | Path, plan: Plan) -> Path:
    """Where the cache keeps the store of ``plan``: one folder per (model, corpus, dtype, bf16)."""
    key = f"{plan.model}-{plan.corpus}-{plan.dtype}{'-bf16' if plan.bf16 else ''}"
    return Path(cache_dir) / "embeddings" / key


class TextRows:
    """A plain list of texts as corpus rows (ids are the row numbers)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.fingerprint = texts_fingerprint(list(texts))

    def __len__(self) -> int:
        return len(self.texts)

    def id_range(self, start: int, stop: int) -> list[str]:
        return [str(i) for i in range(start, stop)]

    def text_range(self, start: int, stop: int) -> list[str]:
        return list(self.texts[start:stop])


@dataclass
class EncodeResult:
    folder: Path
    plan: Plan
    encoded: list[int] = field(default_factory=list)  # shards this call encoded
    reused: list[int] = field(default_factory=list)  # shards of this worker already on disk
    store: EmbeddingStore | None = None  # None while other workers' shards are missing

    @property
    def missing(self) -> int:
        """Shards of the whole store not written yet (by any worker)."""
        if self.store is not None:
            return 0
        return sum(1 for i in range(self.plan.num_shards) if complete_shard(self.folder, self.plan, i) is None)


def make_plan(model, rows, dtype: str = "float32", shard_size: int = DEFAULT_SHARD_SIZE, bf16: bool = False,
              model_name: str = "") -> Plan:
    return Plan(model=model_fingerprint(model), corpus=rows.fingerprint, count=len(rows), dtype=dtype,
                shard_size=shard_size, model_name=model_name, bf16=bf16)


def encode_store(model, corpus, folder: str | Path | None = None, *, cache_dir: str | Path | None = None,
                 batch_size: int = 64, bf16: bool = False, dtype: str = "float32",
                 shard_size: int = DEFAULT_SHARD_SIZE, part: int = 0, parts: int = 1, model_name: str = "",
                 desc: str = "encode corpus") -> EncodeResult:
    """Encode this worker's missing shards of ``corpus`` (a dict, a DocStore or rows) into ``folder`` (default:
    the cache's folder for this model and corpus), and write the manifest if the store is then complete."""
    rows = corpus if hasattr(corpus, "text_range") else corpus_rows(corpus)
    plan = make_plan(model, rows, dtype, shard_size, bf16, model_name)
    if folder is None:
        if cache_dir is None:
            raise ValueError("give a store folder or a cache folder")
        folder = store_folder(cache_dir, plan)
    folder = Path(folder)
    on_disk = read_plan(folder) if (folder / "manifest.json").exists() else None
    if on_disk is not None and any(complete_shard(folder, on_disk, i) is None for i in range(on_disk.num_shards)):
        logger.warning("%s: a shard is missing or damaged; the missing shards are encoded again", folder)
        (folder / "manifest.json").unlink()
    if (folder / "manifest.json").exists():
        store = EmbeddingStore.open(folder, model=plan.model, corpus=plan.corpus, count=plan.count)
        diff = store.manifest.plan.differences(plan)
        if not diff:
            logger.info("embedding store hit: %s", folder)
            return EncodeResult(folder, plan, reused=list(range(part, plan.num_shards, parts)), store=store)
        write_plan(folder, plan)  # raises, naming the differences
    folder.mkdir(parents=True, exist_ok=True)
    plan = write_plan(folder, plan)
    result = EncodeResult(folder, plan)
    todo = []
    for i in range(part, plan.num_shards, parts):
        (result.reused if complete_shard(folder, plan, i) is not None else todo).append(i)
    if result.reused:
        logger.info("%d of this worker's shards are already written; encoding the other %d",
                    len(result.reused), len(todo))
    progress = tqdm(total=sum(plan.rows(i)[1] - plan.rows(i)[0] for i in todo), desc=desc, unit=" docs",
                    disable=not todo or plan.count < 2 * shard_size, mininterval=2.0)
    for i in todo:
        start, stop = plan.rows(i)
        vectors = encode(model, rows.text_range(start, stop), batch_size=batch_size, bf16=bf16, show_progress=False)
        write_shard(folder, plan, i, rows.id_range(start, stop), vectors)
        result.encoded.append(i)
        progress.update(stop - start)
    progress.close()
    with locked(folder / ".finalize.lock"):
        if (folder / "manifest.json").exists() or finalize(folder) is not None:
            result.store = EmbeddingStore.open(folder)
    return result


def corpus_vectors(model, corpus: Mapping[str, dict[str, str]], cache_dir: str | Path | None, *,
                   batch_size: int = 64, bf16: bool = False, dtype: str = "float32",
                   shard_size: int = DEFAULT_SHARD_SIZE, desc: str = "encode corpus") -> VectorSource:
    """The corpus's vectors: its store in ``cache_dir`` (encoded first if missing, resuming), or, with
    ``cache_dir=None``, an in-memory array (no store, nothing cached)."""
    rows = corpus_rows(corpus)
    if cache_dir is None:
        return ArrayVectors(encode(model, rows.text_range(0, len(rows)), batch_size=batch_size, bf16=bf16,
                                   desc=desc), rows.id_list)
    result = encode_store(model, rows, cache_dir=cache_dir, batch_size=batch_size, bf16=bf16, dtype=dtype,
                          shard_size=shard_size, desc=desc)
    assert result.store is not None  # one worker writes every shard
    return result.store


def encode_cached(model, texts: Sequence[str], cache_dir: str | Path | None, batch_size: int = 64,
                  bf16: bool = False, shard_size: int = DEFAULT_SHARD_SIZE, desc: str = "encode") -> np.ndarray:
    """A list of texts (queries, sentences) as one float32 array, through the store in ``cache_dir`` (so a second
    call with the same model and texts does not encode); ``cache_dir=None`` disables the cache."""
    if cache_dir is None:
        return encode(model, list(texts), batch_size=batch_size, bf16=bf16, desc=desc)
    result = encode_store(model, TextRows(texts), cache_dir=cache_dir, batch_size=batch_size, bf16=bf16,
                          shard_size=shard_size, desc=f"{desc} ({len(texts)} texts)")
    assert result.store is not None
    return result.store.read_all()
