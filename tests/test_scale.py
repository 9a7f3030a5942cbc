"""Corpus scale: the embedding store, sharded (torchrun) and resumable encoding, exact search streamed within a
memory budget, IVF lists merged on disk, indexes in parts, the memory-mapped corpus, and their errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from densekit.data.beir import doc_text, load_beir, load_corpus
from densekit.data.corpus import DocStore, corpus_fingerprint
from densekit.errors import ConfigError, DataError
from densekit.mining.miner import MineConfig
from densekit.mining.registry import RETRIEVERS
from densekit.models import encode, load_model
from densekit.retrieval.build import build_index_folder
from densekit.retrieval.exhaustive import ExactScan
from densekit.retrieval.index import DenseIndex
from densekit.serving.app import app_for_folder
from densekit.vectors import ArrayVectors, EmbeddingStore, corpus_vectors, encode_store
from densekit.vectors.shards import Plan
from densekit.vectors.store import write_store
from tests.helpers import mine_json, scifact_subset, write_beir
from tests.test_distributed import REPO, torchrun


@pytest.fixture(autouse=True, scope="module")
def _faiss_single_thread(one_faiss_thread):
    yield


@pytest.fixture(scope="module")
def subset(scifact_dir, tmp_path_factory) -> Path:
    return scifact_subset(scifact_dir, tmp_path_factory.mktemp("scale") / "beir", n_queries=15, n_docs=120)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    centers = np.random.default_rng(123).standard_normal((24, d))
    rng = np.random.default_rng(seed)
    x = (centers[rng.integers(0, 24, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def array_store(folder: Path, vectors: np.ndarray, shard_size: int, dtype: str = "float32",
                model: str = "m1", corpus: str = "c1") -> EmbeddingStore:
    ids = [f"doc{i}" for i in range(len(vectors))]
    plan = Plan(model=model, corpus=corpus, count=len(vectors), dtype=dtype, shard_size=shard_size)
    return write_store(folder, plan, ((ids[a:a + shard_size], vectors[a:a + shard_size])
                                      for a in range(0, len(vectors), shard_size)))


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    return clustered(3000), clustered(60, seed=1)


# --- the store and encoding ---------------------------------------------------------------------------------------

def test_store_holds_ids_and_vectors_and_a_second_run_encodes_nothing(subset, tiny, tmp_path, monkeypatch):
    corpus = load_corpus(subset / "corpus.jsonl")
    first = encode_store(tiny, corpus, tmp_path / "s", shard_size=32)
    store = first.store
    assert first.encoded == [0, 1, 2, 3] and store is not None and len(store.manifest.shards) == 4
    assert list(store.ids) == list(corpus) and store.ids[37] == list(corpus)[37] and store.dim == 32
    reference = encode(tiny, [doc_text(d) for d in corpus.values()], show_progress=False)
    assert np.allclose(store.read_all(), reference, atol=1e-6)
    assert np.allclose(store.take(np.array([90, 3, 64])), reference[[90, 3, 64]], atol=1e-6)
    half = encode_store(tiny, corpus, tmp_path / "h", shard_size=32, dtype="float16").store
    assert np.abs(half.read_all() - reference).max() < 2e-3
    saved = sum(s.bytes for s in store.manifest.shards) - sum(s.bytes for s in half.manifest.shards)
    assert abs(saved - 120 * 32 * 2) < 64 * 4  # two bytes a value fewer (Arrow pads each shard's buffers)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    cached = corpus_vectors(tiny, corpus, tmp_path / "cache", shard_size=50)
    monkeypatch.setattr("densekit.vectors.encode.encode", no_encoding)
    again = encode_store(tiny, corpus, tmp_path / "s", shard_size=32)
    assert again.encoded == [] and again.reused == [0, 1, 2, 3]
    assert corpus_vectors(tiny, corpus, tmp_path / "cache", shard_size=50).folder == cached.folder
    assert [p.name for p in (tmp_path / "cache" / "embeddings").iterdir()] == [cached.folder.name]


def test_two_processes_encode_the_same_store_as_one(subset, tiny_model_dir, tmp_path):
    common = ["encode", "--model", tiny_model_dir, "--data", str(subset), "--shard-size", "16", "--cache-dir",
              str(tmp_path / "cache")]
    two = torchrun("-m", "densekit.cli", *common, "--output", str(tmp_path / "two"))
    assert "worker 1 of 2: encoded 4 shards" in two.stdout and "worker 2 of 2: encoded 4 shards" in two.stdout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    printed = []
    # --backend auto (the default) resolves to torch with several workers, so that racing ranks cannot calibrate
    # differently; the one-process run names it
    for args in (["--output", str(tmp_path / "one"), "--backend", "torch"],  # then a Slurm-array-like pair
                 ["--output", str(tmp_path / "array"), "--num-shards", "2", "--shard-index", "1"],
                 ["--output", str(tmp_path / "array"), "--num-shards", "2", "--shard-index", "0"]):
        done = subprocess.run([sys.executable, "-m", "densekit.cli", *common, *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        printed.append(done.stdout)
    assert "4 shards of other workers are not written yet" in printed[1] and "store complete" in printed[2]
    stores = [EmbeddingStore.open(tmp_path / name, verify=True) for name in ("one", "two", "array")]
    checksums = [[s.sha256 for s in store.manifest.shards] for store in stores]
    assert len(checksums[0]) == 8 and checksums[0] == checksums[1] == checksums[2]  # byte for byte the same
    assert list(stores[1].ids) == list(load_corpus(subset / "corpus.jsonl"))


def test_a_killed_encode_resumes_with_the_missing_shards_only(subset, minilm_path, tmp_path):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "densekit.cli", "encode", "--model", minilm_path, "--data", str(subset),
               "--output", str(out), "--shard-size", "12", "--batch-size", "4", "--max-seq-length", "128",
               "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("shards/*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shards/*.arrow")
               if p.with_suffix(".json").exists()}
    assert 2 <= len(written) < 10 and not (out / "manifest.json").exists(), written
    with pytest.raises(DataError, match=f"incomplete embedding store: {len(written)} of 10 shards"):
        EmbeddingStore.open(out)
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"encoded {10 - len(written)} shards, {len(written)} were already written" in resumed.stdout
    for name, stamp in written.items():  # the shards written before the kill were not touched
        path = out / "shards" / f"{name}.arrow"
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    store = EmbeddingStore.open(out, verify=True)
    model = load_model(minilm_path, max_seq_length=128)
    texts = [doc_text(d) for d in load_corpus(subset / "corpus.jsonl").values()]
    before = int(sorted(written)[0].split("-")[1])
    after = next(i for i in range(10) if f"shard-{i:05d}" not in written)
    for shard in (before, after):
        rows = slice(12 * shard, 12 * shard + 12)
        assert np.allclose(store.shard_vectors(shard), encode(model, texts[rows], batch_size=4, show_progress=False),
                           atol=1e-5)


def test_parquet_export_for_vector_databases(subset, tiny_model_dir, tmp_path):
    from densekit.cli import main

    assert main(["encode", "--model", tiny_model_dir, "--data", str(subset), "--output", str(tmp_path / "s"),
                 "--shard-size", "50", "--dtype", "float16", "--export-parquet", str(tmp_path / "pq"),
                 "--cache-dir", "none"]) == 0
    store = EmbeddingStore.open(tmp_path / "s")
    table = pq.read_table(tmp_path / "pq")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["part-00000.parquet", "part-00001.parquet",
                                                                   "part-00002.parquet"]
    assert table.column("id").to_pylist() == list(store.ids)
    exported = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    assert exported.dtype == np.float32 and np.array_equal(exported, store.read_all())
    assert json.loads(table.schema.metadata[b"densekit"])["dim"] == 32


# --- bad input ----------------------------------------------------------------------------------------------------

class OtherModel:
    """An encoder with another fingerprint (encode_store asks the model for it)."""

    def fingerprint(self) -> str:
        return "another-model"


def test_foreign_missing_truncated_and_corrupted_shards_are_clear_errors(subset, tiny, tiny_model_dir, tmp_path,
                                                                          vectors, capsys):
    corpus = load_corpus(subset / "corpus.jsonl")
    encode_store(tiny, corpus, tmp_path / "s", shard_size=32)
    with pytest.raises(DataError, match="plan.json: this folder holds embeddings of other inputs \\(model"):
        (tmp_path / "s" / "manifest.json").rename(tmp_path / "manifest.json")
        try:
            encode_store(OtherModel(), corpus, tmp_path / "s", shard_size=32)
        finally:
            (tmp_path / "manifest.json").rename(tmp_path / "s" / "manifest.json")
    with pytest.raises(DataError, match="were encoded by another model"):
        encode_store(OtherModel(), corpus, tmp_path / "s", shard_size=32)
    with pytest.raises(DataError, match="another model"):
        EmbeddingStore.open(tmp_path / "s", model="another-model")
    with pytest.raises(DataError, match="another corpus"):
        EmbeddingStore.open(tmp_path / "s", corpus=corpus_fingerprint(dict(list(corpus.items())[:-1])))
    with pytest.raises(DataError, match="holds 32-dimensional vectors but the model makes 384"):
        EmbeddingStore.open(tmp_path / "s", dim=384)
    # a shard of another store copied into a folder being resumed
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "s", partial)
    (partial / "manifest.json").unlink()
    foreign = array_store(tmp_path / "foreign", vectors[0][:120], 32)
    shutil.copy(foreign.folder / "shards" / "shard-00001.json", partial / "shards" / "shard-00001.json")
    with pytest.raises(DataError, match="shard-00001.json.*encoded from another model"):
        encode_store(tiny, corpus, partial, shard_size=32)
    from densekit.cli import main

    assert main(["index", "--model", tiny_model_dir, "--data", str(subset), "--output", str(tmp_path / "i"),
                 "--embeddings", str(foreign.folder)]) == 2
    assert "were encoded by another model" in capsys.readouterr().err and not (tmp_path / "i").exists()
    # a shard of another dimension
    mixed = tmp_path / "mixed"
    shutil.copytree(foreign.folder, mixed)
    (mixed / "manifest.json").unlink()
    plan = Plan.from_json(json.loads((mixed / "plan.json").read_text()), mixed)
    from densekit.vectors.shards import finalize, write_shard

    write_shard(mixed, plan, 2, [f"doc{i}" for i in range(64, 96)], clustered(32, d=16))
    with pytest.raises(DataError, match="shard-00002.arrow: holds 16-dimensional vectors, other shards 32"):
        finalize(mixed)
    # missing, truncated, corrupted
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "s", damaged)
    shard = damaged / "shards" / "shard-00002.arrow"
    data = shard.read_bytes()
    shard.unlink()
    with pytest.raises(DataError, match=r"shard 2 \(shards/shard-00002.arrow\) is missing"):
        EmbeddingStore.open(damaged)
    shard.write_bytes(data[:-100])
    with pytest.raises(DataError, match="shard-00002.arrow: shard has .* bytes, the manifest says .*truncated"):
        EmbeddingStore.open(damaged)
    middle = len(data) // 2
    shard.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    opened = EmbeddingStore.open(damaged)  # same size: found when the shard is read
    with pytest.raises(DataError, match="shard-00002.arrow: checksum mismatch"):
        ExactScan(opened).search(clustered(2), 5)
    with pytest.raises(DataError, match="checksum mismatch"):
        EmbeddingStore.open(damaged, verify=True)
    # the dense retriever refuses a store of another corpus
    dense = RETRIEVERS.get("dense")
    small = dict(list(corpus.items())[:100])
    with pytest.raises(DataError, match="another corpus"):
        dense(model=tiny_model_dir, corpus_embeddings=str(tmp_path / "s"), cache_dir=None).retrieve(
            {"q": "x"}, small, 5)


# --- search and indexes beyond RAM --------------------------------------------------------------------------------

def test_streamed_exact_top_k_equals_flat_search(vectors, tmp_path, monkeypatch):
    docs, queries = clustered(6000, seed=5), vectors[1]
    flat = DenseIndex.build(docs, [f"doc{i}" for i in range(len(docs))])
    expected_scores, expected_rows = flat.search(queries, 20)
    for dtype in ("float32", "float16"):
        store = array_store(tmp_path / dtype, docs, shard_size=700, dtype=dtype)
        scan = ExactScan(store, memory_budget=10**6)  # 1MB: blocks of 1,302 rows that straddle the 700-row shards
        monkeypatch.setattr(ExactScan, "query_batch", lambda self, k: 25)  # and three passes over the store
        assert 700 < scan.block_rows() < len(docs) / 4
        scores, rows = scan.search(queries, 20)
        if dtype == "float16":  # the same search as a flat index over the half-precision vectors
            expected_scores, expected_rows = DenseIndex.build(docs.astype(np.float16).astype(np.float32),
                                                              list(store.ids)).search(queries, 20)
        assert np.array_equal(rows, expected_rows) and np.allclose(scores, expected_scores, atol=1e-5)
        assert [h.doc_id for h in scan.search_hits(queries[:1], 3)[0]] == [f"doc{r}" for r in rows[0, :3]]
    assert ExactScan(ArrayVectors(docs[:5], list("abcde"))).search(queries, 10)[1].shape == (60, 5)


def test_on_disk_ivf_and_index_parts_return_what_the_in_memory_index_does(vectors, tmp_path, monkeypatch):
    docs, queries = vectors
    store = array_store(tmp_path / "store", docs, shard_size=500)
    budget = 2**20  # blocks of ~4000 rows would hold it all; this makes the builder go block by block
    cases = [("ivf-flat", {"nlist": 16, "nprobe": 4}), ("ivf-pq", {"nlist": 16, "nprobe": 4, "m": 8,
                                                                   "fast_scan": False, "refine": "none"})]
    for index_type, params in cases:
        memory = DenseIndex.build(docs, list(store.ids), index_type, params)
        expected = memory.search(queries, 10)
        on_disk = build_index_folder(store, tmp_path / index_type, index_type, params, on_disk=True,
                                     memory_budget=budget)
        assert isinstance(faiss.extract_index_ivf(on_disk.index).invlists, faiss.InvertedLists)
        assert sorted(p.name for p in (tmp_path / index_type).iterdir()) == ["doc_ids.json", "index.faiss",
                                                                             "index.ivfdata", "meta.json"]
        got = on_disk.search(queries, 10)
        assert np.array_equal(got[1], expected[1]) and np.allclose(got[0], expected[0], atol=1e-6)
        (tmp_path / index_type).rename(tmp_path / f"{index_type}-moved")  # the lists file travels with the folder
        moved = DenseIndex.load(tmp_path / f"{index_type}-moved", mmap=True)
        assert np.array_equal(moved.search(queries, 10)[1], expected[1])
        assert moved.search_hits(queries[:1], 1)[0][0].doc_id == f"doc{expected[1][0, 0]}"
    flat_rows = DenseIndex.build(docs, list(store.ids)).search(queries, 10)[1]
    monkeypatch.setattr("densekit.retrieval.ids.JSON_IDS_MAX", 100)  # ids as a big corpus keeps them
    parts = build_index_folder(store, tmp_path / "flat-parts", "flat", parts=3, memory_budget=budget)
    assert isinstance(parts.index, faiss.IndexShards) and parts.meta["parts"] == [[0, 1000], [1000, 2000],
                                                                                  [2000, 3000]]
    assert (tmp_path / "flat-parts" / "doc_ids.arrow").exists() and type(parts.doc_ids).__name__ == "ArrowIds"
    assert np.array_equal(parts.search(queries, 10)[1], flat_rows)
    assert [h.doc_id for h in parts.search_hits(queries[:1], 5)[0]] == [f"doc{r}" for r in flat_rows[0, :5]]
    ivf_parts = build_index_folder(store, tmp_path / "ivf-parts", "ivf-flat", {"nlist": 16, "nprobe": 4}, parts=2,
                                   on_disk=True, memory_budget=budget)
    ivf_rows = DenseIndex.build(docs, list(store.ids), "ivf-flat", {"nlist": 16, "nprobe": 4}).search(queries, 10)[1]
    assert np.array_equal(ivf_parts.search(queries, 10)[1], ivf_rows)
    ivf_parts.set_search_params(nprobe=16)  # every part follows
    assert np.array_equal(ivf_parts.search(queries, 10)[1], flat_rows)
    ivf_parts.save(tmp_path / "copy")
    assert np.array_equal(DenseIndex.load(tmp_path / "copy").search(queries, 10)[1], flat_rows)
    with pytest.raises(ConfigError, match="--on-disk needs an IVF index type"):
        build_index_folder(store, tmp_path / "x", "hnsw", on_disk=True)
    with pytest.raises(ConfigError, match="fast_scan=false"):
        build_index_folder(store, tmp_path / "x", "ivf-pq", {"nlist": 16, "refine": "none"}, on_disk=True)
    with pytest.raises(ConfigError, match="refine=none"):
        build_index_folder(store, tmp_path / "x", "ivf-pq", {"nlist": 16, "fast_scan": False}, on_disk=True)
    assert not (tmp_path / "x").exists()


# --- the memory-mapped corpus -------------------------------------------------------------------------------------

def test_memory_mapped_corpus_reads_like_the_dict(scifact_dir, tmp_path, monkeypatch):
    source = scifact_dir / "corpus.jsonl.gz"
    monkeypatch.setattr("densekit.data.corpus.REMAP_EVERY", 3)  # lookups survive the mapping being renewed
    docs = DocStore.open_for(source, tmp_path)
    corpus = load_corpus(source)
    assert len(docs) == len(corpus) == 5183 and list(docs) == list(corpus)
    assert docs.fingerprint == corpus_fingerprint(corpus)
    some = list(corpus)[::517]
    assert all(docs[d] == corpus[d] and d in docs for d in some) and "no-such-id" not in docs
    assert docs.text_range(10, 20) == [doc_text(corpus[d]) for d in list(corpus)[10:20]]
    assert docs.texts()[some[3]] == doc_text(corpus[some[3]]) and docs.id_list[-1] == list(corpus)[-1]
    with pytest.raises(KeyError):
        docs["no-such-id"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(DocStore, "build", no_conversion)
    assert DocStore.open_for(source, tmp_path).folder == docs.folder  # converted once, then reused


@pytest.mark.parametrize("lines, message", [
    (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": "y"', '{"_id": "c", "text": "z"}'],
     r"corpus.jsonl:2: invalid JSON"),
    (['{"_id": "a", "text": "x"}', '{"_id": "b", "title": "t"}'], r"corpus.jsonl:2, field 'text': missing field"),
    (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": "y"}', '{"_id": "a", "text": "z"}'],
     r"corpus.jsonl:3, field '_id': duplicate document id 'a'"),
    ([], r"corpus.jsonl: the corpus is empty"),
])
def test_bad_corpus_lines_name_the_file_line_and_field(lines, message, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(DataError, match=message):
        DocStore.open_for(path, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "corpora").glob("*/meta.json"))  # nothing half-converted is kept


def without_scores(records: list[dict]) -> list[dict]:
    return [{**r, "negatives": [{k: v for k, v in n.items() if k != "score"} for n in r["negatives"]]}
            for r in records]


def scores_of(records: list[dict]) -> list[float]:
    return [n["score"] for r in records for n in r["negatives"]]


def test_mining_a_memory_mapped_corpus_within_a_budget_equals_mining_the_dict(subset, tiny_model_dir, tmp_path):
    options = {"dense": {"model": tiny_model_dir, "cache_dir": str(tmp_path / "cache"), "memory_budget": "1MB",
                         "shard_size": 25}}
    config = MineConfig(retrievers=["dense"], sampler="random-in-window", num_negatives=3, window=(2, 30),
                        retriever_options=options)
    in_memory = mine_json(load_beir(subset, "train"), config)
    streamed = load_beir(subset, "train", stream=True, cache_dir=tmp_path / "cache")
    assert isinstance(streamed.corpus, DocStore)
    assert mine_json(streamed, config) == in_memory and len(in_memory) >= 15
    store = corpus_vectors(load_model(tiny_model_dir), streamed.corpus, tmp_path / "cache", shard_size=25)
    assert len(store.manifest.shards) == 5  # the two runs shared one store
    from densekit.encoders import EncoderOptions
    from densekit.evaluation.beir import evaluate_model
    from densekit.vectors import ScaleOptions

    encoder, scale = EncoderOptions(cache_dir=str(tmp_path / "cache")), ScaleOptions(shard_size=25)
    metrics = [evaluate_model(tiny_model_dir, dataset, tmp_path / name, encoder=encoder, scale=scale)
               for name, dataset in (("eval-dict", load_beir(subset, "train")), ("eval-mapped", streamed))]
    assert metrics[0]["ndcg_at_10"] == metrics[1]["ndcg_at_10"] > 0
    assert (tmp_path / "eval-dict" / "run.trec").read_text() == (tmp_path / "eval-mapped" / "run.trec").read_text()
    # approximate mining through a prebuilt on-disk IVF index: probing every list gives the exact candidates
    build_index_folder(store, tmp_path / "ivf", "ivf-flat", {"nlist": 3, "nprobe": 3}, on_disk=True)
    approx = MineConfig(retrievers=["dense"], sampler="random-in-window", num_negatives=3, window=(2, 30),
                        retriever_options={"dense": {**options["dense"], "index": str(tmp_path / "ivf")}})
    through_index = mine_json(streamed, approx)
    # the same negatives in the same order; an IVF list scan sums the products in another order than a flat
    # scan, so a score may differ in its last printed (6th) decimal
    assert without_scores(through_index) == without_scores(in_memory)
    assert np.allclose(scores_of(through_index), scores_of(in_memory), atol=2e-6)
    other = write_beir(tmp_path / "other", {"x": {"text": "another corpus"}, "y": {"text": "entirely"}},
                       {"q": "x"}, {"train": {"q": {"x": 1}}})
    with pytest.raises(DataError, match="not this corpus"):
        mine_json(load_beir(other, "train"), approx)


def test_serving_a_big_corpus_index_reads_text_by_id(subset, tiny, tiny_model_dir, tmp_path, monkeypatch):
    from densekit.cli import main

    monkeypatch.setenv("DENSEKIT_STREAM_BYTES", "1")  # every corpus counts as big: memory-mapped, not a dict
    monkeypatch.setenv("DENSEKIT_CACHE", str(tmp_path / "cache"))  # where the server finds the converted corpus
    assert main(["index", "--model", tiny_model_dir, "--data", str(subset), "--output", str(tmp_path / "idx"),
                 "--type", "ivf-flat", "--param", "nlist=4", "--param", "nprobe=4", "--on-disk", "--parts", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--shard-size", "40", "--report-queries", "10"]) == 0
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["report"]["recall_at_10"] == 1.0 and meta["on_disk"] and len(meta["parts"]) == 2
    corpus = load_corpus(subset / "corpus.jsonl")
    query = doc_text(corpus[list(corpus)[7]])[:1000]
    with TestClient(app_for_folder(tmp_path / "idx", tiny)) as client:
        server = client.app.state.server
        assert not isinstance(server.current.texts, dict)  # looked up on demand, not loaded
        response = client.post("/search", json={"query": query, "k": 3, "return_text": True})
        assert response.status_code == 200, response.text
        hits = response.json()["results"][0]["hits"]
    assert hits[0]["doc_id"] == list(corpus)[7] and all(h["text"] == doc_text(corpus[h["doc_id"]]) for h in hits)


def test_the_refresh_store_rewrites_only_the_shards_it_refreshes(subset, tiny, minilm_path, tmp_path):
    from densekit.data.corpus import corpus_rows
    from densekit.mining.refresh import earlier_store, refresh_slice, refresh_store

    rows = corpus_rows(load_corpus(subset / "corpus.jsonl"))
    texts = rows.text_range(0, len(rows))
    base = ArrayVectors(encode(tiny, texts, show_progress=False), rows.id_list)
    from densekit.models import build_random_bert

    checkpoint = load_model(build_random_bert(tmp_path / "ckpt", minilm_path, layers=2, hidden=32, heads=2,
                                              intermediate=64, max_position=128, max_seq_length=64, seed=1))
    folder = tmp_path / "embeddings"
    first = refresh_slice(len(rows), 0.25, 0)  # rows 0-29: shard 0 (rows 0-31) only
    store = refresh_store(base, folder, rows, first, checkpoint, shard_size=32)
    expected = base.read_all()
    expected[first] = encode(checkpoint, [texts[i] for i in first], show_progress=False)
    assert np.allclose(store.read_all(), expected, atol=1e-5) and list(store.ids) == rows.id_list
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("shards/*.arrow")}
    second = refresh_slice(len(rows), 0.25, 1)  # rows 30-59: shards 0 and 1
    store = refresh_store(earlier_store(folder, rows), folder, rows, second, checkpoint, shard_size=32)
    expected[second] = encode(checkpoint, [texts[i] for i in second], show_progress=False)
    assert np.allclose(store.read_all(), expected, atol=1e-5)
    changed = {p.name for p in folder.glob("shards/*.arrow") if p.stat().st_mtime_ns != stamps[p.name]}
    assert changed == {"shard-00000.arrow", "shard-00001.arrow"}
    (folder / "manifest.json").unlink()  # a refresh killed after its last shard: the next one finishes the store
    assert np.allclose(earlier_store(folder, rows).read_all(), expected, atol=1e-5)
