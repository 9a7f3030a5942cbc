from __future__ import annotations

from typing import Protocol

Candidates = dict[str, list[tuple[str, float]]]


class CandidateRetriever(Protocol):
    name: str

    def retrieve(self, queries: dict[str, str], corpus: dict[str, dict[str, str]], k: int) -> Candidates:
        """Top-``k`` documents per query, best first."""
        ...
