"""Pseudo-queries for a corpus without training queries, registered by name (``densekit pseudo-queries
--strategy NAME``): each strategy turns a document into zero or more queries whose positive is that document.

* ``title``: the document's title (scientific and encyclopedic titles read like claims or questions);
* ``sentence``: a sentence of the document, drawn at random (the query of Lee et al.'s 2019 inverse cloze task,
  which also cuts it from its passage: ``--cut-pseudo-query-from-positive`` below);
* ``generator``: a sequence-to-sequence query generator (doc2query, e.g. ``doc2query/msmarco-t5-base-v1``, any
  local folder), when one is installed.

The teacher labels what comes out: ``densekit mine --teacher ...`` scores each pseudo-query's candidates, and
``--require-positive-first`` keeps only the queries whose source document the teacher ranks first, as Tamber et
al. (2025) filter their synthetic queries.

A title or a sentence is copied from its document, so the positive contains its query word for word.
``densekit mine --cut-pseudo-query-from-positive`` cuts it out (:func:`without_query`: title -> the abstract alone,
sentence -> the rest of the passage), as the inverse cloze task removes the sentence from its context (Lee et al.,
2019, who keep it in 10% of examples). It is off by default: on SciFact dev (100 held-out train queries, InfoNCE,
titles of 1,600 documents added), titles left in gave nDCG@10 0.7287 and cut out 0.7106, against 0.7183 without
pseudo-queries; SciFact's claims read like titles, and the evaluated documents carry theirs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from densekit.registry import Registry

STRATEGIES: Registry = Registry("pseudo-query strategy", "densekit.mining.pseudo_queries")

# (doc_id, doc {"title", "text"}, rng) -> queries
Strategy = Callable[[str, dict, random.Random], Iterator[str]]

PREFIX = "pq-"  # the id of every pseudo-query starts with it: pq-<strategy>-<doc id>-<k>


def is_pseudo_query(query_id: str) -> bool:
    return query_id.startswith(PREFIX)


def without_query(query: str, positive: str) -> str:
    """``positive`` with the first verbatim copy of ``query`` cut out; unchanged when the query is not in it or is
    all of it."""
    at = positive.find(query)
    if at < 0:
        return positive
    rest = f"{positive[:at].rstrip()} {positive[at + len(query):].lstrip()}".strip()
    return rest or positive
