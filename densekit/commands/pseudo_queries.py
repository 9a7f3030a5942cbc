"""densekit pseudo-queries: training queries made from a corpus (titles, sentences, a query generator), written as
a BEIR folder that ``densekit mine`` reads like any other (the corpus is linked, not copied)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from densekit.errors import ConfigError
from densekit.options import option

NAME = "pseudo-queries"
HELP = "make training queries from a corpus (title, sentence or a doc2query generator) as a BEIR folder"
logger = logging.getLogger(__name__)


@dataclass
class PseudoQueryOptions:
    """pseudo-queries"""

    data: str = option(help="BEIR folder or name whose corpus the queries are made from")
    output: str = option(help="BEIR folder to write (queries.jsonl, qrels/train.tsv, a link to the corpus)")
    strategy: str = option("title", help="title, sentence or generator (densekit/mining/pseudo_queries/)")
    strategy_options: dict[str, Any] = option(default_factory=dict, flag="--strategy-option",
                                              help="strategy option, repeatable: e.g. min_words=5, "
                                                   "model=doc2query/msmarco-t5-base-v1, per_document=3")
    max_docs: int | None = option(None, help="make queries from at most this many documents (a seeded sample)")
    seed: int = option(42, help="seed of the document sample and of the strategies' draws")
    include_split: str | None = option(None, help="also copy this split's real queries and qrels into the output "
                                                  "(e.g. train), so one mining run covers both")
    exclude_splits: list[str] = option(default_factory=lambda: ["test"], flag="--exclude-split",
                                       help="make no query from a document judged in this split, repeatable (no "
                                            "test positives leak into training; default test); 'none' for none")

    def __post_init__(self) -> None:
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"--max-docs must be at least 1, got {self.max_docs}")


OPTIONS = (PseudoQueryOptions,)


def run(opts: PseudoQueryOptions) -> int:
    from densekit.mining.pseudo_queries._build import make_pseudo_queries

    summary = make_pseudo_queries(opts)
    print(json.dumps(summary, indent=2))
    return 0
