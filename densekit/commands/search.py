"""densekit search: query a saved index with text."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option

NAME = "search"
HELP = "search a saved index with text queries; prints JSON lines (or writes a TREC run with --queries)"


@dataclass
class SearchOptions:
    """search"""

    index: str = option(help="index folder written by densekit index")
    model: str | None = option(None, help="query encoder (default: the model recorded in the index)")
    query: list[str] = option(default_factory=list, aliases=("-q",), help="query text, repeatable")
    queries: str | None = option(None, help="queries.jsonl (BEIR format) to search in bulk")
    k: int = option(10, flag="-k", help="results per query")
    output: str | None = option(None, help="with --queries: TREC run file to write")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("-k must be at least 1")


OPTIONS = (SearchOptions, EncoderOptions)


def run(opts: SearchOptions, encoder: EncoderOptions) -> int:
    from densekit.data.beir import load_queries
    from densekit.evaluation.metrics import write_trec_run
    from densekit.retrieval.searcher import Searcher

    if not opts.query and not opts.queries:
        raise ConfigError("give --query TEXT (repeatable) or --queries FILE")
    searcher = Searcher.from_index(opts.index, opts.model, encoder)
    queries = {str(i): q for i, q in enumerate(opts.query)}
    if opts.queries:
        queries.update(load_queries(opts.queries))
    qids = list(queries)
    hits = searcher.batch_search([queries[q] for q in qids], opts.k)
    if opts.output:
        write_trec_run({q: {h.doc_id: h.score for h in found} for q, found in zip(qids, hits, strict=True)},
                       opts.output)
        print(f"wrote a run for {len(qids)} queries to {opts.output}")
        return 0
    for qid, found in zip(qids, hits, strict=True):
        line = {"query_id": qid, "query": queries[qid],
                "hits": [{"doc_id": h.doc_id, "score": round(h.score, 6)} for h in found]}
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    return 0
