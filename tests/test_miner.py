import pytest

from densekit.data.beir import load_beir
from densekit.errors import ConfigError, DataError
from densekit.mining.miner import MineConfig
from tests.helpers import mine_json, scifact_subset, write_beir


@pytest.fixture(scope="module")
def subset(scifact_dir, tmp_path_factory):
    return scifact_subset(scifact_dir, tmp_path_factory.mktemp("sub") / "scifact", n_queries=30, n_docs=400)


def test_bm25_mining_respects_window_and_positives(subset):
    ds = load_beir(subset, "train")
    records = mine_json(ds, MineConfig(retrievers=["bm25"], num_negatives=5, window=(3, 20)))
    assert len(records) == sum(len(v) for v in ds.qrels.values())
    for rec in records:
        positives = set(ds.qrels[rec["query_id"]])
        assert rec["positive_id"] in positives
        assert 0 < len(rec["negatives"]) <= 5
        for neg in rec["negatives"]:
            assert neg["doc_id"] not in positives
            assert 3 <= neg["rank"] <= 20 and neg["source"] == "bm25"
        ranks = [n["rank"] for n in rec["negatives"]]
        assert ranks == sorted(ranks)


def test_positive_at_top_is_never_a_negative(subset):
    # window starting at rank 1: the positive is usually BM25's first hit, and must be skipped
    ds = load_beir(subset, "train")
    records = mine_json(ds, MineConfig(retrievers=["bm25"], num_negatives=3, window=(1, 10)))
    for rec in records:
        assert not {n["doc_id"] for n in rec["negatives"]} & set(ds.qrels[rec["query_id"]])


def test_dense_and_random_sampler(subset, minilm_path, tmp_path):
    ds = load_beir(subset, "train")
    config = MineConfig(retrievers=["dense", "bm25"], sampler="random-in-window", num_negatives=4, window=(2, 30),
                        retriever_options={"dense": {"model": minilm_path, "cache_dir": str(tmp_path)}})
    records = mine_json(ds, config)
    sources = {n["source"] for r in records for n in r["negatives"]}
    assert sources == {"dense", "bm25"}
    for rec in records:
        ids = [n["doc_id"] for n in rec["negatives"]]
        assert len(ids) == len(set(ids)) == 4
        assert not set(ids) & set(ds.qrels[rec["query_id"]])
    # a second run hits the embedding cache and gives the same result
    assert mine_json(ds, config) == records


def test_bad_mining_input(tmp_path, subset):
    ds = load_beir(subset, "train")
    with pytest.raises(ConfigError, match="unknown candidate retriever 'nope'"):
        mine_json(ds, MineConfig(retrievers=["nope"]))
    with pytest.raises(ConfigError, match="unknown sampler"):
        mine_json(ds, MineConfig(retrievers=["bm25"], sampler="best"))
    with pytest.raises(ConfigError, match="rank window"):
        mine_json(ds, MineConfig(retrievers=["bm25"], window=(10, 5)))
    folder = write_beir(tmp_path / "nopos", {"d1": {"text": "x"}, "d2": {"text": "y"}}, {"q1": "x"},
                        {"train": {"q1": {"d1": 0}}})
    with pytest.raises(DataError, match="no positive judgment"):
        mine_json(load_beir(folder, "train"), MineConfig(retrievers=["bm25"]))
    empty = write_beir(tmp_path / "empty", {}, {"q1": "x"}, {"train": {}})
    with pytest.raises(DataError, match="corpus is empty"):
        load_beir(empty, "train")
