"""densekit mine: hard negatives for the queries of a BEIR split, written as training JSONL.

Strategies combine freely, on the command line or in a YAML ``--config``::

    retriever: [bm25, dense, hybrid, cluster]   # candidate retrievers
    sampler: star                                # top | random-in-window | star
    sampler_option: {hard_ratio: 0.5}
    teacher: cross-encoder                       # false-negative denoising (or bi-encoder)
    perc_pos: 0.95                               # NV-Retriever TopK-PercPos
    soft_weights: true
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.mining.denoise import DenoiseConfig
from densekit.mining.miner import MineConfig
from densekit.options import option
from densekit.vectors.options import ScaleOptions

NAME = "mine"
HELP = ("mine hard negatives (BM25, dense, hybrid or cluster candidates; top, random or STAR sampling; "
        "teacher denoising) into a training JSONL")
logger = logging.getLogger(__name__)


@dataclass
class MineFiles:
    """input and output"""

    data: str = option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a BEIR name")
    output: str = option(help="output JSONL (read directly by densekit train)")
    split: str = option("train", help="qrels split whose queries and positives are used")
    model: str = option("all-MiniLM-L6-v2", help="model for the dense, hybrid and ivf-local retrievers")


OPTIONS = (MineFiles, MineConfig, DenoiseConfig, EncoderOptions, ScaleOptions)


def with_encoder(config: MineConfig, model: str, encoder: EncoderOptions, scale: ScaleOptions | None = None) -> dict:
    """The retriever options, the dense retriever's model, encoder and scale settings filled in (explicit ones
    win)."""
    scale = scale or ScaleOptions()
    dense = {"model": model, "batch_size": encoder.batch_size, "bf16": encoder.bf16, "cache_dir": encoder.cache,
             "backend": encoder.backend, "memory_budget": scale.memory_budget, "dtype": scale.dtype,
             "shard_size": scale.shard_size}
    if encoder.max_seq_length:
        dense["max_seq_length"] = encoder.max_seq_length
    options = {name: dict(values) for name, values in config.retriever_options.items()}
    options["dense"] = {**dense, **options.get("dense", {})}
    return options


def mining_record(files: MineFiles, config: MineConfig, count: int) -> dict:
    """What ``densekit mine`` records beside its output (``<output>.mining.json``); training copies it into the
    model card."""
    from densekit import options

    record = {"data": files.data, "split": files.split, "records": count, **options.as_dict(config)}
    if config.denoise.enabled:
        record["denoise"] = options.as_dict(config.denoise)
    return record


def run(files: MineFiles, config: MineConfig, denoise: DenoiseConfig, encoder: EncoderOptions,
        scale: ScaleOptions) -> int:
    from dataclasses import replace
    from pathlib import Path

    from densekit.data.beir import load_beir
    from densekit.io import atomic_write_json, atomic_write_jsonl, ensure_writable
    from densekit.mining.miner import mine

    ensure_writable(Path(files.output).parent)  # fail now, not after mining
    config = replace(config, denoise=denoise, cache_dir=encoder.cache,
                     retriever_options=with_encoder(config, files.model, encoder, scale))
    config.validate()
    dataset = load_beir(files.data, files.split, stream=scale.stream, cache_dir=encoder.cache)
    records = mine(dataset, config)
    count = atomic_write_jsonl(files.output, (r.to_json() for r in records))
    atomic_write_json(f"{files.output}.mining.json", mining_record(files, config, count))
    logger.info("wrote %d training records to %s", count, files.output)
    print(f"wrote {count} records to {files.output}")
    return 0
