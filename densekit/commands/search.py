"""densekit search: query a saved index with text."""

from __future__ import annotations

import json
import sys

from densekit.errors import ConfigError

NAME = "search"
HELP = "search a saved index with text queries; prints JSON lines (or writes a TREC run with --queries)"


def add_arguments(p) -> None:
    p.add_argument("--index", required=True, help="index folder written by densekit index")
    p.add_argument("--model", default=None, help="query encoder (default: the model recorded in the index)")
    p.add_argument("--query", "-q", action="append", default=None, help="query text, repeatable")
    p.add_argument("--queries", default=None, help="queries.jsonl (BEIR format) to search in bulk")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--output", default=None, help="with --queries: TREC run file to write")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bf16", action="store_true")


def run(args) -> int:
    from densekit.data.beir import load_queries
    from densekit.evaluation.metrics import write_trec_run
    from densekit.models import encode, load_model
    from densekit.retrieval.index import DenseIndex

    if not args.query and not args.queries:
        raise ConfigError("give --query TEXT (repeatable) or --queries FILE")
    if args.k < 1:
        raise ConfigError("-k must be at least 1")
    index = DenseIndex.load(args.index)
    model = load_model(args.model or index.meta.get("resolved") or index.meta["model"],
                       max_seq_length=index.meta.get("max_seq_length"))
    queries = {str(i): q for i, q in enumerate(args.query or [])}
    if args.queries:
        queries.update(load_queries(args.queries))
    qids = list(queries)
    emb = encode(model, [queries[q] for q in qids], batch_size=args.batch_size, bf16=args.bf16,
                 show_progress=len(qids) > 256)
    hits = index.search_ids(emb, args.k)
    if args.output:
        write_trec_run({q: dict(h) for q, h in zip(qids, hits, strict=True)}, args.output)
        print(f"wrote a run for {len(qids)} queries to {args.output}")
        return 0
    for qid, h in zip(qids, hits, strict=True):
        line = {"query_id": qid, "query": queries[qid], "hits": [{"doc_id": d, "score": round(s, 6)} for d, s in h]}
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    return 0
