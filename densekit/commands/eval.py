"""densekit eval: BEIR metrics of a model (or a saved index) on a dataset split."""

from __future__ import annotations

import json

from densekit.commands._common import add_encoding_arguments, cache_dir
from densekit.errors import ConfigError

NAME = "eval"
HELP = "nDCG@10, MRR@10, Recall@100, MAP of a model or index on a BEIR split; writes metrics.json and run.trec"


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="hub name or local folder (default: the index's model)")
    p.add_argument("--index", default=None, help="a saved index folder to search instead of encoding the corpus")
    p.add_argument("--data", required=True, help="BEIR folder or name")
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, help="folder for metrics.json and run.trec")
    p.add_argument("-k", type=int, default=100, help="retrieval depth")
    add_encoding_arguments(p)


def run(args) -> int:
    from densekit.data.beir import load_beir
    from densekit.evaluation.beir import evaluate_model

    if not args.model and not args.index:
        raise ConfigError("give --model or --index")
    dataset = load_beir(args.data, args.split)
    result = evaluate_model(args.model, dataset, args.output, k=args.k, index_dir=args.index,
                            batch_size=args.batch_size, bf16=args.bf16, cache_dir=cache_dir(args),
                            max_seq_length=args.max_seq_length)
    keys = ("ndcg_at_10", "mrr_at_10", "recall_at_100", "map", "num_queries")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return 0
