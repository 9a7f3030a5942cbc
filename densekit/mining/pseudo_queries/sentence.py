"""``sentence``: one sentence of a document, drawn at random, as its query."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from densekit.mining.pseudo_queries import STRATEGIES

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str, min_words: int) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


@STRATEGIES.register("sentence")
def sentence_queries(doc_id: str, doc: dict, rng: random.Random, min_words: int = 6) -> Iterator[str]:
    candidates = sentences(doc.get("text") or "", min_words)
    if candidates:
        yield rng.choice(candidates)
