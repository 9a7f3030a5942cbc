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

from densekit.commands._common import add_encoding_arguments, cache_dir, parse_key_values
from densekit.data.beir import load_beir
from densekit.io import atomic_write_jsonl
from densekit.onnx_encoder import BACKENDS

NAME = "mine"
HELP = "mine hard negatives (BM25, dense, hybrid or cluster candidates; top, random or STAR sampling; " \
       "teacher denoising) into a training JSONL"
logger = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--data", required=True,
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a BEIR name")
    p.add_argument("--split", default="train", help="qrels split whose queries and positives are used")
    p.add_argument("--retriever", action="append", dest="retrievers", default=None,
                   help="candidate retriever, repeatable: bm25, dense, hybrid, cluster "
                        "(default: bm25 and dense)")
    p.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="model for the dense, hybrid and cluster retrievers")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="how the dense/cluster model encodes: torch, onnx (fp32, same embeddings, faster on CPU) "
                        "or onnx-int8 (int8 weights, fastest, cosine ~0.995 to fp32)")
    p.add_argument("--sampler", default="top", help="how negatives are picked: top, random-in-window, star")
    p.add_argument("--sampler-option", action="append", default=None, metavar="KEY=VALUE",
                   help="e.g. hard_ratio=0.5 for star")
    p.add_argument("--num-negatives", type=int, default=4, help="negatives per query")
    p.add_argument("--window", type=int, nargs=2, default=[10, 50], metavar=("START", "END"),
                   help="1-based rank window (inclusive) negatives are drawn from")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--retriever-option", action="append", default=None, metavar="RETRIEVER.KEY=VALUE",
                   help="e.g. bm25.k1=1.2, hybrid.fusion=score, cluster.n_clusters=64")
    g = p.add_argument_group("false-negative denoising")
    g.add_argument("--teacher", default=None, help="rescore candidates with: cross-encoder or bi-encoder")
    g.add_argument("--teacher-model", default=None,
                   help="teacher model (default cross-encoder/ms-marco-MiniLM-L12-v2 or "
                        "sentence-transformers/all-mpnet-base-v2)")
    g.add_argument("--teacher-option", action="append", default=None, metavar="KEY=VALUE",
                   help="e.g. max_length=256, backend=onnx")
    g.add_argument("--absolute-margin", type=float, default=None,
                   help="drop a negative scoring above teacher(positive) - margin")
    g.add_argument("--perc-pos", type=float, default=None,
                   help="drop a negative scoring above this fraction of teacher(positive) "
                        "(TopK-PercPos, e.g. 0.95)")
    g.add_argument("--max-score", type=float, default=None, help="drop a negative scoring above this")
    g.add_argument("--min-positive-score", type=float, default=None,
                   help="skip the relative filters for a query whose positive the teacher scores below this")
    g.add_argument("--soft-weights", action="store_true", help="write a weight in [0, 1] per kept negative")
    g.add_argument("--soft-start", type=float, default=0.8,
                   help="soft weights fall from 1 at soft_start * positive to 0 at the positive's score")
    g.add_argument("--oversample", type=int, default=2,
                   help="candidates rescored per query, as a multiple of --num-negatives")
    g.add_argument("--no-refill", dest="refill", action="store_false",
                   help="do not top up a query that denoising left short of negatives from the rest of its window")
    p.add_argument("--output", required=True, help="output JSONL (read directly by densekit train)")
    add_encoding_arguments(p)


def retriever_options(args) -> dict:
    options: dict = {"dense": {"model": args.model, "batch_size": args.batch_size, "bf16": args.bf16,
                               "cache_dir": cache_dir(args)}}
    if getattr(args, "max_seq_length", None):
        options["dense"]["max_seq_length"] = args.max_seq_length
    if getattr(args, "backend", "torch") != "torch":
        options["dense"]["backend"] = args.backend
    for key, value in parse_key_values(args.retriever_option, "--retriever-option").items():
        name, _, opt = key.partition(".")
        options.setdefault(name, {})[opt] = value
    return options


def mine_config(args):
    from densekit.mining.denoise import DenoiseConfig
    from densekit.mining.miner import MineConfig

    teacher_options = parse_key_values(args.teacher_option, "--teacher-option")
    if args.teacher_model:
        teacher_options["model"] = args.teacher_model
    denoise = DenoiseConfig(teacher=args.teacher, teacher_options=teacher_options,
                            absolute_margin=args.absolute_margin, perc_pos=args.perc_pos,
                            max_score=args.max_score,
                            min_positive_score=args.min_positive_score, soft_weights=args.soft_weights,
                            soft_start=args.soft_start, oversample=args.oversample,
                            refill=args.refill)
    return MineConfig(retrievers=args.retrievers or ["bm25", "dense"], sampler=args.sampler,
                      num_negatives=args.num_negatives, window=tuple(args.window), seed=args.seed,
                      retriever_options=retriever_options(args),
                      sampler_options=parse_key_values(args.sampler_option, "--sampler-option"),
                      denoise=denoise, cache_dir=cache_dir(args))


def run(args) -> int:
    from densekit.mining.miner import mine

    config = mine_config(args)
    config.validate()
    dataset = load_beir(args.data, args.split)
    records = mine(dataset, config)
    count = atomic_write_jsonl(args.output, records)
    logger.info("wrote %d training records to %s", count, args.output)
    print(f"wrote {count} records to {args.output}")
    return 0
