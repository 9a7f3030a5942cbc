"""Mining strategies on a real SciFact subset: hybrid, ivf-local, STAR, caching, and clear errors on bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from densekit.data.beir import BeirDataset, doc_text, load_beir
from densekit.errors import ConfigError, DataError
from densekit.mining.clustering import assign, centroid_chain, kmeans
from densekit.mining.miner import MineConfig
from densekit.mining.registry import RETRIEVERS
from densekit.mining.retrievers.hybrid import reciprocal_rank_fusion, score_fusion
from densekit.mining.samplers.star import sample_star
from densekit.mining.samplers.window import Candidate, SampleContext
from tests.helpers import mine_json


def scifact_subset(scifact_dir, n_queries: int = 10, n_other_docs: int = 200) -> BeirDataset:
    full = load_beir(scifact_dir, "train")
    qids = sorted(full.qrels)[:n_queries]
    positives = {d for q in qids for d in full.qrels[q]}
    others = [d for d in full.corpus if d not in positives][:n_other_docs]
    corpus = {d: full.corpus[d] for d in sorted(positives) + others}
    return BeirDataset(full.path, corpus, {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids},
                       "train")


@pytest.fixture(scope="module")
def subset(scifact_dir) -> BeirDataset:
    return scifact_subset(scifact_dir)


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion({"bm25": [("a", 9.0), ("b", 5.0), ("c", 1.0)],
                                    "dense": [("b", 0.9), ("d", 0.8), ("a", 0.1)]}, {}, rrf_k=60)
    scores = dict(fused)
    assert [d for d, _ in fused[:2]] == ["b", "a"]  # in both lists beats top of one
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["d"] == pytest.approx(1 / 62)
    weighted = dict(score_fusion({"x": [("a", 2.0), ("b", 1.0)], "y": [("b", 1.0), ("a", 0.0)]}, {"x": 2.0}))
    assert weighted["a"] == pytest.approx(2.0) and weighted["b"] == pytest.approx(1.0)


def test_star_mixes_hard_and_random_negatives():
    candidates = [Candidate(f"d{i}", 1.0 - i / 100, i, "dense") for i in range(1, 51)]
    corpus_ids = [f"d{i}" for i in range(1, 1001)] + ["pos"]
    picked = sample_star(candidates, 8, (3, 30), random.Random(0), SampleContext(corpus_ids, {"pos"}),
                         hard_ratio=0.25)
    hard = [c for c in picked if c.source == "dense"]
    rand = [c for c in picked if c.source == "random"]
    assert [c.doc_id for c in hard] == ["d3", "d4"]
    assert len(rand) == 6 and len(hard) + len(rand) == 8
    assert len({c.doc_id for c in picked}) == 8 and all(c.doc_id != "pos" for c in picked)
    # randoms are spread out, so a truncated prefix keeps the mix
    assert sum(c.source == "random" for c in picked[:4]) == 3
    with pytest.raises(ConfigError, match="hard_ratio"):
        sample_star(candidates, 4, (1, 10), random.Random(0), SampleContext(corpus_ids, set()), hard_ratio=1.5)


def test_kmeans_chain_visits_every_cluster_once():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)).astype(np.float32)
    x = np.concatenate([c + 0.05 * rng.normal(size=(50, 16)) for c in centers]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = kmeans(x, 4, seed=0)
    labels = assign(x, centroids)
    # each planted blob lands in one cluster
    assert all(len(set(labels[i * 50:(i + 1) * 50])) == 1 for i in range(4))
    assert sorted(centroid_chain(centroids, start=2)) == [0, 1, 2, 3]


def test_mine_hybrid_cluster_star_records(subset, tiny_model_dir, tmp_path):
    dense = {"model": tiny_model_dir, "cache_dir": str(tmp_path / "cache")}
    config = MineConfig(retrievers=["bm25", "hybrid", "ivf-local"], sampler="star", num_negatives=6, window=(1, 30),
                        retriever_options={"dense": dense, "ivf-local": {"n_clusters": 8, "neighbours": 1}},
                        sampler_options={"hard_ratio": 0.5}, cache_dir=str(tmp_path / "cache"))
    records = mine_json(subset, config)
    assert len(records) == sum(len(r) for r in subset.qrels.values())
    sources = {n["source"] for r in records for n in r["negatives"]}
    assert {"bm25", "hybrid", "ivf-local", "random"} <= sources
    for record in records:
        positives = set(subset.qrels[record["query_id"]])
        assert record["positive_id"] in positives
        assert 1 <= len(record["negatives"]) <= 6
        for neg in record["negatives"]:
            assert neg["doc_id"] not in positives
            assert neg["text"] == doc_text(subset.corpus[neg["doc_id"]])
            if neg["source"] != "random":
                assert 1 <= neg["rank"] <= 30 and isinstance(neg["score"], float)
            if neg["source"] == "ivf-local":
                assert isinstance(neg["cluster"], int)
        assert isinstance(record["query_cluster"], int)
    assert len(list((tmp_path / "cache" / "candidates").glob("*.json"))) == 3

    # a rerun reuses every cached stage: retrieving again would fail
    class Broken:
        def __init__(self, **_):
            pass

        def retrieve(self, *args):
            raise AssertionError("candidates were recomputed instead of read from the cache")

    saved = dict(RETRIEVERS._items)
    try:
        for name in ("bm25", "hybrid", "ivf-local"):
            RETRIEVERS._items[name] = Broken
        assert mine_json(subset, config) == records
    finally:
        RETRIEVERS._items.clear()
        RETRIEVERS._items.update(saved)


def test_cluster_candidates_stay_in_nearby_clusters(subset, tiny_model_dir, tmp_path):
    retriever = RETRIEVERS.get("ivf-local")(model=tiny_model_dir, cache_dir=str(tmp_path), n_clusters=10,
                                          neighbours=0)
    cands = retriever.retrieve(subset.queries, subset.corpus, 50)
    for qid, ranked in cands.items():
        assert ranked, qid
        # with no neighbours, every candidate is in the query's own cluster
        assert {retriever.doc_clusters[d] for d, _ in ranked} == {retriever.query_clusters[qid]}
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)


def test_unknown_strategy_names_are_config_errors(subset):
    with pytest.raises(ConfigError, match="unknown candidate retriever 'bm99'.*bm25"):
        mine_json(subset, MineConfig(retrievers=["bm99"]))
    with pytest.raises(ConfigError, match="unknown sampler 'best'"):
        mine_json(subset, MineConfig(retrievers=["bm25"], sampler="best"))
    with pytest.raises(ConfigError, match="unknown teacher 'oracle'"):
        from densekit.mining.denoise import DenoiseConfig
        mine_json(subset, MineConfig(retrievers=["bm25"], denoise=DenoiseConfig(teacher="oracle")))
    with pytest.raises(ConfigError, match="sampler 'star' has no option.*ratio"):
        mine_json(subset, MineConfig(retrievers=["bm25"], sampler="star", sampler_options={"ratio": 0.5}))
    with pytest.raises(ConfigError, match="retriever 'bm25' has no option.*k3"):
        mine_json(subset, MineConfig(retrievers=["bm25"], retriever_options={"bm25": {"k3": 1}}))


def test_bad_inputs_are_data_errors(subset):
    empty = BeirDataset(subset.path, {}, subset.queries, subset.qrels, "train")
    with pytest.raises(DataError, match="corpus is empty"):
        mine_json(empty, MineConfig(retrievers=["bm25"]))
    qid = next(iter(subset.qrels))
    no_positive = BeirDataset(subset.path, subset.corpus, subset.queries,
                              {**subset.qrels, qid: {d: 0 for d in subset.qrels[qid]}}, "train")
    with pytest.raises(DataError, match=f"no positive judgment.*'{qid}'") as info:
        mine_json(no_positive, MineConfig(retrievers=["bm25"]))
    assert "train.tsv" in str(info.value)
    missing_doc = BeirDataset(subset.path, subset.corpus, subset.queries, {qid: {"nope": 1}}, "train")
    with pytest.raises(DataError, match="positive 'nope'.*not in the corpus"):
        mine_json(missing_doc, MineConfig(retrievers=["bm25"]))


def test_dense_over_precomputed_embeddings_matches_encoding(subset, tiny_model_dir, tmp_path):
    from densekit.models import encode, load_model

    model = load_model(tiny_model_dir)
    emb = encode(model, [doc_text(d) for d in subset.corpus.values()], show_progress=False)
    np.save(tmp_path / "emb.npy", emb)
    dense = RETRIEVERS.get("dense")
    encoded = dense(model=tiny_model_dir, cache_dir=None).retrieve(subset.queries, subset.corpus, 20)
    mapped = dense(model=tiny_model_dir, corpus_embeddings=str(tmp_path / "emb.npy")).retrieve(
        subset.queries, subset.corpus, 20)
    assert {q: [d for d, _ in v] for q, v in mapped.items()} == {q: [d for d, _ in v] for q, v in encoded.items()}
    np.save(tmp_path / "short.npy", emb[:-1])
    with pytest.raises(DataError, match="short.npy.*for a corpus of"):
        dense(model=tiny_model_dir, corpus_embeddings=str(tmp_path / "short.npy")).retrieve(
            subset.queries, subset.corpus, 20)
