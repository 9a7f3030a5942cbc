"""Pseudo-queries for a corpus without training queries, registered by name (``densekit pseudo-queries
--strategy NAME``): each strategy turns a document into zero or more queries whose positive is that document.

* ``title``: the document's title (scientific and encyclopedic titles read like claims or questions);
* ``sentence``: a sentence of the document, drawn at random (the query overlaps its positive word for word,
  which the teacher's labels and the hard negatives then have to make up for);
* ``generator``: a sequence-to-sequence query generator (doc2query, e.g. ``doc2query/msmarco-t5-base-v1``, any
  local folder), when one is installed.

The teacher labels what comes out: ``densekit mine --teacher ...`` scores each pseudo-query's candidates, and
``--require-positive-first`` keeps only the queries whose source document the teacher ranks first, as Tamber et
al. (2025) filter their synthetic queries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from densekit.registry import Registry

STRATEGIES: Registry = Registry("pseudo-query strategy", "densekit.mining.pseudo_queries")

# (doc_id, doc {"title", "text"}, rng) -> queries
Strategy = Callable[[str, dict, random.Random], Iterator[str]]
