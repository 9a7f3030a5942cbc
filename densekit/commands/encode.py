"""densekit encode: a corpus into an embedding store, spread over processes and machines, resumable.

::

    densekit encode --model M --data msmarco --output /shared/msmarco-vectors            # one process
    torchrun --nproc_per_node 8 -m densekit.cli encode --model M --data msmarco ...      # 8 GPUs (x M nodes)
    densekit encode ... --num-shards 16 --shard-index $SLURM_ARRAY_TASK_ID              # a Slurm array

Each worker encodes its share of the store's shards (shard ``i`` goes to worker ``i mod N``) and skips the
shards already written, so a killed job is resumed by running it again. The last worker to finish writes the
manifest; the result is the same as a one-process encode. Without ``--output`` the store goes to the cache,
where ``densekit mine``, ``index`` and ``eval`` find it (same model, same corpus: no re-encoding).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option
from densekit.vectors.options import ScaleOptions

NAME = "encode"
HELP = "encode a corpus into an embedding store (sharded, resumable; under torchrun or a Slurm array)"
logger = logging.getLogger(__name__)


@dataclass
class EncodeOptions:
    """corpus encoding"""

    model: str = option(help="hub name or local sentence-transformers folder")
    data: str = option(help="BEIR folder or name, or a corpus.jsonl(.gz)")
    output: str | None = option(None, help="store folder (default: the cache's folder for this model and corpus, "
                                           "where mine, index and eval find it)")
    num_shards: int | None = option(None, help="workers the shards are split among (default: $WORLD_SIZE, e.g. "
                                               "under torchrun, else 1)")
    shard_index: int | None = option(None, help="this worker's number, 0-based (default: $RANK, else 0)")
    export_parquet: str | None = option(None, help="when the store is complete, also write it as Parquet files "
                                                   "(id, vector) into this folder, for a vector database")
    verify: bool = option(False, help="check the sha256 of every shard of the finished store")

    def __post_init__(self) -> None:
        if self.num_shards is not None and self.num_shards < 1:
            raise ConfigError(f"--num-shards must be at least 1, got {self.num_shards}")
        if self.shard_index is not None and self.shard_index < 0:
            raise ConfigError(f"--shard-index must not be negative, got {self.shard_index}")

    def worker(self) -> tuple[int, int]:
        """(this worker, number of workers): the flags, else torchrun's RANK / WORLD_SIZE."""
        parts = self.num_shards if self.num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
        part = self.shard_index if self.shard_index is not None else int(os.environ.get("RANK", 0))
        if not 0 <= part < parts:
            raise ConfigError(f"--shard-index must be below --num-shards ({parts}), got {part}")
        return part, parts


OPTIONS = (EncodeOptions, EncoderOptions, ScaleOptions)


def device() -> str | None:
    """This process's GPU under torchrun (LOCAL_RANK), the default device otherwise."""
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def run(opts: EncodeOptions, encoder: EncoderOptions, scale: ScaleOptions) -> int:
    from densekit.data.beir import corpus_file
    from densekit.data.corpus import open_corpus
    from densekit.vectors import encode_store
    from densekit.vectors.export import export_parquet

    if opts.output is None and encoder.cache is None:
        raise ConfigError("--cache-dir none needs --output: the store has to go somewhere")
    part, parts = opts.worker()
    if parts > 1 and encoder.backend == "auto":
        # every shard must come from one engine (the store holds one model fingerprint), but each worker would
        # calibrate on its own, and workers on other machines (or racing ranks) may choose differently
        logger.info("--backend auto with %d workers: encoding with torch (pass --backend to choose)", parts)
        encoder = dataclasses.replace(encoder, backend="torch")
    corpus = open_corpus(corpus_file(opts.data), scale.stream, encoder.cache)
    model = encoder.load(opts.model, device=device())
    result = encode_store(model, corpus, opts.output, cache_dir=encoder.cache, batch_size=encoder.batch_size,
                          bf16=encoder.bf16, dtype=scale.dtype, shard_size=scale.shard_size, part=part, parts=parts,
                          model_name=opts.model)
    print(f"worker {part + 1} of {parts}: encoded {len(result.encoded)} shards, {len(result.reused)} were already "
          f"written ({result.folder})")
    store = result.store
    if store is None:
        print(f"{result.missing} shards of other workers are not written yet; the last worker to finish writes the "
              "manifest")
        return 0
    if opts.verify:
        store.verify()
    print(f"store complete: {store.count} vectors of dim {store.dim} ({store.dtype}) in "
          f"{len(store.manifest.shards)} shards, {sum(s.bytes for s in store.manifest.shards) / 2**20:.1f} MiB")
    if opts.export_parquet:
        files = export_parquet(store, opts.export_parquet)
        print(f"exported {len(files)} Parquet files to {opts.export_parquet}")
    return 0
