import json

import numpy as np
import pytest

from densekit.errors import ConfigError, DataError
from densekit.retrieval.index import DenseIndex


def unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_roundtrip_and_exact_results(tmp_path):
    rng = np.random.default_rng(0)
    emb = unit(rng, 200)
    ids = [f"doc{i}" for i in range(200)]
    index = DenseIndex.build(emb, ids, "flat", meta={"model": "m"})
    index.save(tmp_path / "idx")
    loaded = DenseIndex.load(tmp_path / "idx")
    assert loaded.doc_ids == ids and loaded.meta["model"] == "m" and loaded.meta["count"] == 200
    queries = unit(rng, 5)
    hits = loaded.search_hits(queries, 3)
    expected = np.argsort(-(queries @ emb.T), axis=1)[:, :3]
    assert [[hit.doc_id for hit in h] for h in hits] == [[ids[j] for j in row] for row in expected]
    mm = DenseIndex.load(tmp_path / "idx", mmap=True)
    assert mm.search_hits(queries, 3) == hits
    # k larger than the corpus is capped, not an error
    assert len(loaded.search_hits(queries[:1], 500)[0]) == 200


def test_failed_save_keeps_previous_index(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    DenseIndex.build(unit(rng, 10), [str(i) for i in range(10)]).save(tmp_path / "idx")
    before = json.loads((tmp_path / "idx" / "doc_ids.json").read_text())
    import faiss

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(OSError):
        DenseIndex.build(unit(rng, 20), [str(i) for i in range(20)]).save(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "doc_ids.json").read_text()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp folder left behind


def test_bad_index_inputs(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.raises(DataError, match="2 document ids"):
        DenseIndex.build(unit(rng, 3), ["a", "b"])
    with pytest.raises(ConfigError, match="unknown index type 'nope'"):
        DenseIndex.build(unit(rng, 3), ["a", "b", "c"], "nope")
    with pytest.raises(ConfigError, match="has no parameter"):
        DenseIndex.build(unit(rng, 3), ["a", "b", "c"], "flat", {"nlist": 4})
    with pytest.raises(DataError, match="not a densekit index folder"):
        DenseIndex.load(tmp_path)
