"""Index types (ivf-flat, ivf-pq, hnsw), their search-time parameters, the quality report and the GPU fallback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from densekit.errors import ConfigError
from densekit.retrieval import gpu
from densekit.retrieval.index import INDEX_TYPES, DenseIndex, get_search_params
from densekit.retrieval.index_types._ivf import choose_nlist
from densekit.retrieval.quality import exact_neighbors, index_memory_bytes, quality_report, recall_at_k

sys.path.insert(0, str(Path(__file__).parent))
from helpers import write_beir  # noqa: E402


def clustered(n: int, d: int = 32, clusters: int = 40, seed: int = 0, centers_seed: int = 123) -> np.ndarray:
    """Unit vectors around shared cluster centres: structured like text embeddings, unlike uniform noise."""
    centers = np.random.default_rng(centers_seed).standard_normal((clusters, d))
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True, scope="module")
def _faiss_single_thread(one_faiss_thread):
    yield


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    emb = clustered(4000)
    queries = clustered(200, seed=1)  # same clusters, not in the index
    return emb, [f"doc{i}" for i in range(len(emb))], queries


def test_all_types_are_registered():
    assert {"flat", "ivf-flat", "ivf-pq", "hnsw"} <= set(INDEX_TYPES.names())


@pytest.mark.parametrize("index_type, params, min_recall, faiss_class, knobs", [
    ("ivf-flat", {}, 0.95, "IndexIVFFlat", {"nprobe"}),
    ("hnsw", {}, 0.95, "IndexHNSWFlat", {"ef_search"}),
    ("ivf-pq", {}, 0.85, "IndexRefine", {"nprobe", "k_factor"}),
    ("ivf-pq", {"refine": "flat"}, 0.85, "IndexRefineFlat", {"nprobe", "k_factor"}),
    ("ivf-pq", {"refine": "none"}, 0.3, "IndexIVFPQFastScan", {"nprobe"}),
    ("ivf-pq", {"fast_scan": False, "k_factor": 8}, 0.85, "IndexRefine", {"nprobe", "k_factor"}),
])
def test_default_recall_and_roundtrip(tmp_path, corpus, index_type, params, min_recall, faiss_class, knobs):
    emb, ids, queries = corpus
    index = DenseIndex.build(emb, ids, index_type, params)
    assert index.meta["faiss_class"] == faiss_class and set(index.meta["search_params"]) == knobs
    exact = exact_neighbors(emb, queries, 10)
    _, rows = index.search(queries, 10)
    assert recall_at_k(rows, exact, 10) >= min_recall
    index.save(tmp_path / "idx")
    for mmap in (False, True):
        loaded = DenseIndex.load(tmp_path / "idx", mmap=mmap)
        assert get_search_params(loaded.index) == index.meta["search_params"]
        assert np.array_equal(loaded.search(queries, 10)[1], rows)
    assert loaded.search_hits(queries[:1], 3)[0][0].doc_id == ids[rows[0, 0]]


def test_ivf_flat_matches_flat_when_every_list_is_probed(corpus):
    emb, ids, queries = corpus
    ivf = DenseIndex.build(emb, ids, "ivf-flat", {"nlist": 16, "nprobe": 16})
    exact = exact_neighbors(emb, queries, 10)
    assert recall_at_k(ivf.search(queries, 10)[1], exact, 10) == 1.0


def test_search_params_change_recall_and_persist(tmp_path, corpus):
    emb, ids, queries = corpus
    exact = exact_neighbors(emb, queries, 10)
    index = DenseIndex.build(emb, ids, "ivf-flat", {"nlist": 64})
    high = recall_at_k(index.search(queries, 10)[1], exact, 10)
    index.set_search_params(nprobe=1)
    low = recall_at_k(index.search(queries, 10)[1], exact, 10)
    assert low < high
    index.save(tmp_path / "idx")
    loaded = DenseIndex.load(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["search_params"] == {"nprobe": 1}
    assert faiss.extract_index_ivf(loaded.index).nprobe == 1
    with pytest.raises(ConfigError, match="no search parameter.*ef_search"):
        index.set_search_params(ef_search=64)
    with pytest.raises(ConfigError, match="nprobe must be between 1 and nlist=64"):
        index.set_search_params(nprobe=65)
    hnsw = DenseIndex.build(emb[:500], ids[:500], "hnsw", {"m": 8, "ef_search": 16})
    hnsw.set_search_params(ef_search=64)
    assert hnsw.index.hnsw.efSearch == 64 and hnsw.meta["search_params"] == {"ef_search": 64}


def test_small_corpus_gets_a_smaller_nlist(caplog):
    assert choose_nlist(1_000_000, None) == 4000  # 4 * sqrt(N)
    with caplog.at_level(logging.INFO):
        assert choose_nlist(1000, None) == 25  # 4 * sqrt(1000) = 126 lists would get under 39 points each
    assert "small for nlist=126" in caplog.text
    emb = clustered(600)
    index = DenseIndex.build(emb, [str(i) for i in range(600)], "ivf-flat")
    assert faiss.extract_index_ivf(index.index).nlist == 600 // 39
    with pytest.raises(ConfigError, match="nlist=1000 is more than the 600 vectors"):
        DenseIndex.build(emb, [str(i) for i in range(600)], "ivf-flat", {"nlist": 1000})
    with caplog.at_level(logging.WARNING):
        DenseIndex.build(emb, [str(i) for i in range(600)], "ivf-flat", {"nlist": 100})
    assert "wants at least 3900 vectors" in caplog.text


def test_ivf_trains_on_a_sample(corpus, monkeypatch):
    emb, ids, _ = corpus
    seen = []
    original = faiss.IndexIVFFlat.train

    def spy(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(faiss.IndexIVFFlat, "train", spy)
    index = DenseIndex.build(emb, ids, "ivf-flat", {"nlist": 8, "train_size": 1000})
    assert seen == [1000] and index.index.ntotal == len(emb)


def test_bad_parameters_are_clear(corpus):
    emb, ids, _ = corpus
    with pytest.raises(ConfigError, match="m=7 must divide the embedding dimension 32"):
        DenseIndex.build(emb, ids, "ivf-pq", {"m": 7})
    with pytest.raises(ConfigError, match="fast_scan codes are 4-bit"):
        DenseIndex.build(emb, ids, "ivf-pq", {"nbits": 8})
    with pytest.raises(ConfigError, match="refine must be one of none, sq8, flat"):
        DenseIndex.build(emb, ids, "ivf-pq", {"refine": "pq"})
    with pytest.raises(ConfigError, match="hnsw m must be a positive integer"):
        DenseIndex.build(emb, ids, "hnsw", {"m": 0})
    with pytest.raises(ConfigError, match="has no parameter.*efsearch"):
        DenseIndex.build(emb, ids, "hnsw", {"efsearch": 10})


def test_quality_report_and_recall():
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert recall_at_k(exact, exact, 4) == 1.0
    assert recall_at_k(np.array([[0, 1, 9, 9], [7, 6, -1, -1]]), exact, 4) == pytest.approx(0.5)
    assert recall_at_k(np.array([[1, 0, 3, 2], [4, 9, 5, 6]]), exact, 2) == pytest.approx(0.75)
    emb, queries = clustered(3000, d=64), clustered(50, d=64, seed=2)
    flat = DenseIndex.build(emb, [str(i) for i in range(3000)])
    pq = DenseIndex.build(emb, [str(i) for i in range(3000)], "ivf-pq", {"refine": "none"})
    report = quality_report(flat.index, emb, queries)
    assert report["recall_at_10"] == 1.0 and report["report_queries"] == 50
    assert report["flat_memory_bytes"] == 3000 * 64 * 4
    assert 3000 * 64 * 4 <= report["memory_bytes"] < 3000 * 64 * 4 * 1.01
    assert index_memory_bytes(pq.index) < report["memory_bytes"] / 4  # 16 bytes a vector instead of 256


def test_gpu_helpers_are_a_no_op_without_gpus():
    index = faiss.IndexFlatIP(8)
    if gpu.gpu_count() == 0:
        assert gpu.to_gpu(index) is index and gpu.to_cpu(index) is index
    assert gpu.to_gpu(index, enabled=False) is index
    assert not gpu.is_gpu_index(index)


def test_index_command_writes_a_build_report(tmp_path, tiny_model_dir, capsys):
    from densekit.cli import main

    topics = ["protein folding", "gene expression", "cell membranes", "immune response", "neural circuits"]
    corpus = {f"d{i}": {"title": topics[i % 5], "text": f"study {i} of {topics[i % 5]} in sample {i * 7 % 13}"}
              for i in range(300)}
    queries = {f"q{i}": f"what is known about {topics[i % 5]} {i}" for i in range(30)}
    data = write_beir(tmp_path / "beir", corpus, queries, {"test": {"q0": {"d0": 1}}})
    out = tmp_path / "idx"
    code = main(["index", "--model", tiny_model_dir, "--data", str(data), "--output", str(out), "--type", "hnsw",
                 "--param", "m=8", "--param", "ef_search=64", "--report-queries", "20", "--cache-dir", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "build report: recall@10 vs exact" in printed and "20 dataset queries" in printed
    meta = json.loads((out / "meta.json").read_text())
    report = meta["report"]
    assert report["report_queries"] == 20 and 0.5 <= report["recall_at_10"] <= 1.0
    assert report["memory_bytes"] > report["flat_memory_bytes"]  # HNSW adds its graph to the vectors
    assert report["build_seconds"] >= 0 and meta["search_params"] == {"ef_search": 64}
    assert not list(tmp_path.glob(".idx.*"))  # no temporary folder left behind
