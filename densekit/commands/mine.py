"""densekit mine: hard negatives for the queries of a BEIR split, written as training JSONL."""

from __future__ import annotations

import logging

from densekit.commands._common import add_encoding_arguments, cache_dir, parse_key_values
from densekit.data.beir import load_beir
from densekit.io import atomic_write_jsonl

NAME = "mine"
HELP = "mine hard negatives (BM25 and/or dense candidates, rank window, N per query) into a training JSONL"
logger = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a BEIR name")
    p.add_argument("--split", default="train", help="qrels split whose queries and positives are used")
    p.add_argument("--retriever", action="append", dest="retrievers", default=None,
                   help="candidate retriever, repeatable (default: bm25 and dense)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model for the dense retriever")
    p.add_argument("--sampler", default="top", help="how negatives are picked from the window")
    p.add_argument("--num-negatives", type=int, default=4, help="negatives per query")
    p.add_argument("--window", type=int, nargs=2, default=[10, 50], metavar=("START", "END"),
                   help="1-based rank window (inclusive) negatives are drawn from")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--retriever-option", action="append", default=None, metavar="RETRIEVER.KEY=VALUE",
                   help="e.g. bm25.k1=1.2")
    p.add_argument("--output", required=True, help="output JSONL (read directly by densekit train)")
    add_encoding_arguments(p)


def retriever_options(args) -> dict:
    options: dict = {"dense": {"model": args.model, "batch_size": args.batch_size, "bf16": args.bf16,
                               "cache_dir": cache_dir(args)}}
    for key, value in parse_key_values(args.retriever_option, "--retriever-option").items():
        name, _, opt = key.partition(".")
        options.setdefault(name, {})[opt] = value
    return options


def run(args) -> int:
    from densekit.mining.miner import MineConfig, mine

    config = MineConfig(retrievers=args.retrievers or ["bm25", "dense"], sampler=args.sampler,
                        num_negatives=args.num_negatives, window=tuple(args.window), seed=args.seed,
                        retriever_options=retriever_options(args))
    config.validate()
    dataset = load_beir(args.data, args.split)
    records = mine(dataset, config)
    count = atomic_write_jsonl(args.output, records)
    logger.info("wrote %d training records to %s", count, args.output)
    print(f"wrote {count} records to {args.output}")
    return 0
