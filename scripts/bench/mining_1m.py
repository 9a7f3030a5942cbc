"""Peak RAM of dense mining on a large synthetic corpus of real-looking text (up to 1M documents).

The corpus recombines SciFact sentences: each synthetic document is 3-8 sentences drawn at random
from the abstracts of the first ``--source-docs`` SciFact documents, and the judged positives of
the chosen queries are in it as they are. Encoding a million documents on a CPU takes hours, so
document embeddings are derived, not encoded: every sentence is encoded once with the real model and
a document's embedding is the normalised mean of its sentences' (written chunk by chunk to a
memory-mapped ``.npy``). Queries are encoded with the model as usual. Mining then runs the real
``densekit.mining.mine`` path (dense retriever over the precomputed embeddings, FAISS top-k in query
batches, window sampling).

Each corpus size runs in a fresh process; the JSON gives, per size, peak RSS, the RSS once the
corpus texts are in memory, the size of the embedding matrix, and what one queries x documents
float32 score matrix would take, which mining never builds.

    python scripts/bench/mining_1m.py --sizes 100000 1000000 --out runs/bench/mining_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0), so the peak of the mining phase alone can be read afterwards."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def sentences_of(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def build_corpus(args, work: Path):
    """(dataset, embeddings_path) with ``args.docs`` documents; positives keep their real text."""
    from densekit.data.beir import BeirDataset, doc_text, load_beir
    from densekit.embeddings import encode_cached
    from densekit.models import load_model

    full = load_beir(args.data, args.split)
    qids = sorted(full.qrels)[:args.queries]
    positives = sorted({d for q in qids for d in full.qrels[q]})
    source_ids = list(dict.fromkeys(positives + list(full.corpus)[:args.source_docs]))
    pool: list[str] = []
    doc_sentences: dict[str, list[int]] = {}
    for d in source_ids:
        sents = sentences_of(full.corpus[d]["text"]) or [full.corpus[d]["text"]]
        doc_sentences[d] = list(range(len(pool), len(pool) + len(sents)))
        pool += sents
    model = load_model(args.model)
    sent_emb = encode_cached(model, pool, args.cache_dir, batch_size=64, desc="encode sentences")

    rng = np.random.default_rng(args.seed)
    n_synth = args.docs - len(positives)
    lengths = rng.integers(3, 9, size=n_synth)
    corpus: dict[str, dict[str, str]] = {}
    emb_path = work / "corpus_embeddings.npy"
    emb = np.lib.format.open_memmap(emb_path, mode="w+", dtype=np.float32, shape=(args.docs, sent_emb.shape[1]))
    for row, d in enumerate(positives):
        corpus[d] = full.corpus[d]
        v = sent_emb[doc_sentences[d]].mean(0)
        emb[row] = v / np.linalg.norm(v)
    chunk = 8192  # keeps the (chunk, 8, dim) temporary of the embedding average small
    for start in range(0, n_synth, chunk):
        lens = lengths[start:start + chunk]
        idx = rng.integers(0, len(pool), size=(len(lens), 8))
        mask = np.arange(8)[None, :] < lens[:, None]
        vec = (sent_emb[idx] * mask[..., None]).sum(1)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        emb[len(positives) + start:len(positives) + start + len(lens)] = vec
        for i, (row_idx, n) in enumerate(zip(idx, lens, strict=True)):
            sents = [pool[j] for j in row_idx[:n]]
            corpus[f"syn{start + i}"] = {"title": " ".join(sents[0].split()[:8]), "text": " ".join(sents)}
    emb.flush()
    del emb
    dataset = BeirDataset(full.path, corpus, {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids},
                          args.split)
    assert len(corpus) == args.docs and all(doc_text(corpus[p]) for p in positives)
    return dataset, emb_path, len(pool)


def run_size(args) -> dict:
    from densekit.mining.miner import MineConfig, mine

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        dataset, emb_path, n_sentences = build_corpus(args, Path(work))
        build_s = time.perf_counter() - start
        rss_corpus = rss_mb()
        peak_reset = reset_peak_rss()
        t0 = time.perf_counter()
        options = {"dense": {"model": args.model, "corpus_embeddings": str(emb_path), "cache_dir": None}}
        records = mine(dataset, MineConfig(retrievers=["dense"], sampler="random-in-window",
                                           num_negatives=args.num_negatives, window=(10, 100),
                                           retriever_options=options))
        mine_s = time.perf_counter() - t0
        mining_peak = rss_mb("VmHWM") if peak_reset else None
    dim = 384 if "MiniLM" in args.model else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"docs": args.docs, "queries": len(dataset.qrels), "sentences_encoded": n_sentences,
            "records": len(records), "build_corpus_s": round(build_s, 1), "mine_s": round(mine_s, 1),
            "rss_after_corpus_mb": round(rss_corpus, 1), "peak_rss_mb": round(peak, 1),
            "mining_phase_peak_rss_mb": round(mining_peak, 1) if mining_peak else None,
            "embeddings_mb": round(args.docs * (dim or 0) * 4 / 2**20, 1) if dim else None,
            "full_score_matrix_mb": round(len(dataset.qrels) * args.docs * 4 / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/beir/scifact"))
    p.add_argument("--split", default="train")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=809, help="SciFact train queries to mine for")
    p.add_argument("--source-docs", type=int, default=1000, help="SciFact abstracts whose sentences are recombined")
    p.add_argument("--num-negatives", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/cache", help="sentence embeddings are cached here")
    p.add_argument("--work-dir", default=None, help="where the temporary embedding file goes")
    p.add_argument("--out", default="runs/bench/mining_1m.json")
    p.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.docs:
        Path(args.child_out).write_text(json.dumps(run_size(args)))
        return
    results = []
    for size in args.sizes:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--docs", str(size), "--child-out", out.name, "--data", args.data,
                   "--split", args.split, "--model", args.model, "--queries", str(args.queries),
                   "--source-docs", str(args.source_docs), "--num-negatives", str(args.num_negatives),
                   "--seed", str(args.seed), "--cache-dir", args.cache_dir]
            if args.work_dir:
                cmd += ["--work-dir", args.work_dir]
            subprocess.run(cmd, check=True)
            results.append(json.loads(Path(out.name).read_text()))
            print(json.dumps(results[-1]), flush=True)
    report = {"benchmark": "mining_1m", "model": args.model, "cpu_count": os.cpu_count(), "sizes": results}
    if len(results) > 1:
        a, b = results[0], results[-1]
        for key in ("peak_rss_mb", "mining_phase_peak_rss_mb", "rss_after_corpus_mb"):
            if a.get(key) and b.get(key):
                report[f"{key}_growth_per_100k_docs"] = round((b[key] - a[key]) / ((b["docs"] - a["docs"]) / 1e5), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
