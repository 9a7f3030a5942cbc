"""Benchmark the index types against exact (flat) search: recall@10, query speed-up, memory, build time.

Data sets:
  * scifact: the real all-MiniLM-L6-v2 SciFact corpus embeddings (from the embeddings cache that
    ``densekit index``/``densekit eval`` fill) searched with the 1,109 SciFact queries (train + test);
  * synthetic: N random-but-clustered unit vectors (a mixture of Gaussians on the sphere), with queries
    drawn from the same mixture but not in the index, for a corpus larger than SciFact.

Each index type is built with its densekit defaults (the ones ``densekit index --type T`` uses); a few
search-parameter settings are swept too so the table shows the recall/speed trade-off. QPS is measured in
the same process, same thread count, for flat and the approximate index, both batched (all queries in one
call) and one query per call (what a server with no batching sees). JSON out, markdown table on stdout.

    python scripts/bench/index_types.py --output runs/bench/index_types.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from densekit.io import atomic_write_json
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.quality import exact_neighbors, index_memory_bytes, recall_at_k

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "beir" / "scifact"

CONFIGS = [  # (label, index type, build params, search params to sweep after the default)
    ("ivf-flat", "ivf-flat", {}, [{"nprobe": 8}, {"nprobe": 16}, {"nprobe": 64}]),
    ("hnsw", "hnsw", {}, [{"ef_search": 32}, {"ef_search": 64}, {"ef_search": 256}]),
    ("ivf-pq (sq8 refine)", "ivf-pq", {}, [{"k_factor": 8}]),
    ("ivf-pq (flat refine)", "ivf-pq", {"refine": "flat"}, []),
    ("ivf-pq (no refine)", "ivf-pq", {"refine": "none"}, []),
]


def scifact_embeddings(data: Path, cache_dir: Path, corpus_npy: str | None):
    from densekit.data.beir import load_beir
    from densekit.models import load_model
    from densekit.vectors import corpus_vectors, encode_cached

    dataset = load_beir(data, split=None)
    model = load_model("all-MiniLM-L6-v2")
    if corpus_npy:
        corpus = np.load(corpus_npy, allow_pickle=False)
        if len(corpus) != len(dataset.corpus):
            sys.exit(f"{corpus_npy} has {len(corpus)} rows but the corpus has {len(dataset.corpus)} documents")
    else:  # a cache hit when densekit index/eval already encoded this corpus with this model
        corpus = corpus_vectors(model, dataset.corpus, cache_dir).read_all()
    qids = sorted(dataset.queries)
    queries = encode_cached(model, [dataset.queries[q] for q in qids], cache_dir, desc="encode queries")
    return corpus, queries


def clustered_sphere(n: int, d: int, clusters: int, spread: float, seed: int, latent: int = 32) -> np.ndarray:
    """Unit vectors with text-embedding-like structure: a Gaussian mixture in a ``latent``-dimensional space,
    mapped to ``d`` dimensions by a fixed random matrix, plus a little full-rank noise. (Isotropic noise in all
    384 dimensions would make every neighbour equidistant, which no real embedding model produces.)"""
    fixed = np.random.default_rng(12345)
    centers = fixed.standard_normal((clusters, latent)).astype(np.float32)
    mixing = fixed.standard_normal((latent, d)).astype(np.float32) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 50_000):  # chunked to keep peak memory at a few hundred MB
        m = min(50_000, n - start)
        z = centers[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, latent)).astype(np.float32)
        x = z @ mixing + 0.1 * rng.standard_normal((m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def qps(index: faiss.Index, queries: np.ndarray, k: int, single: int, repeats: int) -> tuple[float, float]:
    """(batched QPS, one-query-per-call QPS), best of ``repeats``."""
    batched, one = 0.0, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k)
        batched = max(batched, len(queries) / (time.perf_counter() - start))
        start = time.perf_counter()
        for row in queries[:single]:
            index.search(row[None, :], k)
        one = max(one, single / (time.perf_counter() - start))
    return batched, one


def bench_dataset(name: str, corpus: np.ndarray, queries: np.ndarray, k: int, single: int, repeats: int) -> list:
    ids = [str(i) for i in range(len(corpus))]
    print(f"[{name}] {len(corpus)} x {corpus.shape[1]} corpus, {len(queries)} queries", file=sys.stderr)
    exact = exact_neighbors(corpus, queries, k)
    flat = DenseIndex.build(corpus, ids, "flat")
    flat_batched, flat_one = qps(flat.index, queries, k, single, repeats)
    flat_memory = index_memory_bytes(flat.index)
    rows = [{"dataset": name, "index": "flat", "params": {}, "search_params": {}, "recall_at_10": 1.0,
             "build_seconds": flat.meta["build_seconds"], "memory_mb": round(flat_memory / 2**20, 2),
             "memory_ratio": 1.0, "qps_batched": round(flat_batched, 1), "qps_single": round(flat_one, 1),
             "speedup_batched": 1.0, "speedup_single": 1.0, "default": True}]
    for label, index_type, params, sweep in CONFIGS:
        index = DenseIndex.build(corpus, ids, index_type, params)
        memory = index_memory_bytes(index.index)
        default_search = dict(index.meta["search_params"])
        for search in [default_search, *sweep]:
            index.set_search_params(**search)
            found = index.search(queries, k)[1]
            batched, one = qps(index.index, queries, k, single, repeats)
            rows.append({"dataset": name, "index": label, "params": index.meta["params"],
                         "search_params": dict(index.meta["search_params"]),
                         "recall_at_10": round(recall_at_k(found, exact, k), 4),
                         "build_seconds": index.meta["build_seconds"], "memory_mb": round(memory / 2**20, 2),
                         "memory_ratio": round(memory / flat_memory, 3), "qps_batched": round(batched, 1),
                         "qps_single": round(one, 1), "speedup_batched": round(batched / flat_batched, 2),
                         "speedup_single": round(one / flat_one, 2), "default": search is default_search})
            print(f"  {label} {rows[-1]['search_params']}: recall@10 {rows[-1]['recall_at_10']}, "
                  f"x{rows[-1]['speedup_single']} single-query speed", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| data | index | search params | recall@10 vs flat | QPS 1 query/call (x flat) | "
             "QPS batched (x flat) | memory MB (x flat) | build s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["search_params"].items()) or "-"
        mark = " (default)" if r["default"] and r["index"] != "flat" and not r["params"] else ""
        lines.append(f"| {r['dataset']} | {r['index']}{mark} | {params} | {r['recall_at_10']:.4f} | "
                     f"{r['qps_single']:.0f} (x{r['speedup_single']:.2f}) | {r['qps_batched']:.0f} "
                     f"(x{r['speedup_batched']:.2f}) | {r['memory_mb']:.1f} (x{r['memory_ratio']:.2f}) | "
                     f"{r['build_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact BEIR folder")
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "cache"), help="embeddings cache")
    p.add_argument("--corpus-npy", default=None, help="SciFact corpus embeddings .npy (skips the cache lookup)")
    p.add_argument("--synthetic", type=int, default=100_000, help="synthetic corpus size (0 skips it)")
    p.add_argument("--synthetic-queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--spread", type=float, default=0.5, help="latent noise around a cluster centre")
    p.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads for every index alike")
    p.add_argument("--single", type=int, default=300, help="queries timed one per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-scifact", action="store_true")
    p.add_argument("--output", default=str(REPO / "runs" / "bench" / "index_types.json"))
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    faiss.omp_set_num_threads(args.threads)
    rows = []
    if not args.skip_scifact:
        corpus, queries = scifact_embeddings(Path(args.data), Path(args.cache_dir), args.corpus_npy)
        rows += bench_dataset("scifact", corpus, queries, 10, args.single, args.repeats)
    if args.synthetic:
        corpus = clustered_sphere(args.synthetic, args.dim, args.clusters, args.spread, seed=0)
        queries = clustered_sphere(args.synthetic_queries, args.dim, args.clusters, args.spread, seed=1)
        rows += bench_dataset(f"synthetic-{args.synthetic // 1000}k", corpus, queries, 10, args.single, args.repeats)
    result = {"benchmark": "index_types", "k": 10, "faiss": faiss.__version__, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
              "synthetic": {"n": args.synthetic, "dim": args.dim, "clusters": args.clusters, "spread": args.spread},
              "rows": rows}
    atomic_write_json(args.output, result)
    print(markdown(rows))
    print(f"\nwrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
