"""``title``: a document's title as its query (documents without a title give none)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from densekit.mining.pseudo_queries import STRATEGIES


@STRATEGIES.register("title")
def title_queries(doc_id: str, doc: dict, rng: random.Random, min_words: int = 4) -> Iterator[str]:
    title = (doc.get("title") or "").strip()
    if len(title.split()) >= min_words:
        yield title
