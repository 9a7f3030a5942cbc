"""densekit's dense mining vs sentence-transformers' ``mine_hard_negatives``: wall time and peak RAM.

Both sides mine SciFact (or a subset: all positives of the split plus the first ``--max-docs``
documents) with the same model, the same rank window and the same number of negatives, "top"
sampling, FAISS search. Each side runs in its own fresh process, so its peak RSS
(``ru_maxrss``) is its own; the runs happen in the same invocation, one after the other:

* ``st``: ``sentence_transformers.util.mine_hard_negatives(..., use_faiss=True)``
* ``ours_cold``: ``densekit.mining.mine`` with an empty embedding cache
* ``ours_warm``: the same command again, reusing the cached corpus embeddings (a second run with
  the same model and corpus never re-encodes)
* ``ours_cold_onnx`` / ``ours_cold_onnx_int8``: cold runs (nothing encoded yet) with the onnxruntime encoder
  (``--backend onnx``: fp32, the same embeddings; ``onnx-int8``: int8 weights). The model is exported to ONNX
  once per model, like a download, before them (``export_onnx`` / ``export_onnx_int8``, timed on their own)

It also reports how many of the negatives the two sides agree on (same model + window + top
sampling should pick the same documents), which is what makes their downstream nDCG@10 comparable.

    python scripts/bench/mining_vs_st.py --max-docs 1500 --out runs/bench/mining_vs_st.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def subset(data: str, split: str, max_docs: int | None, max_queries: int | None = None):
    from densekit.data.beir import BeirDataset, load_beir

    full = load_beir(data, split)
    qrels = {q: full.qrels[q] for q in sorted(full.qrels)[:max_queries or None]}
    if (not max_docs or max_docs >= len(full.corpus)) and len(qrels) == len(full.qrels):
        return full
    positives = sorted({d for rels in qrels.values() for d, r in rels.items() if r >= 1})
    others = [d for d in full.corpus if d not in set(positives)][:max(0, (max_docs or 10**9) - len(positives))]
    corpus = {d: full.corpus[d] for d in positives + others}
    return BeirDataset(full.path, corpus, full.queries, qrels, split)


def run_side(args) -> dict:
    """Runs in the child process: mine once, return timing, peak RSS and the negatives chosen."""
    from densekit.data.beir import doc_text

    dataset = subset(args.data, args.split, args.max_docs, args.max_queries)
    start = time.perf_counter()
    negatives: dict[str, list[str]] = {}
    if args.side == "export":
        from densekit.encoders import load_encoder

        load_encoder(args.model, args.max_seq_length, args.backend, args.cache_dir)
    elif args.side == "st":
        import datasets
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.util import mine_hard_negatives

        from densekit.models import resolve_model

        model = SentenceTransformer(resolve_model(args.model), device="cpu")
        if args.max_seq_length:
            model.max_seq_length = args.max_seq_length
        rows = {"anchor": [], "positive": []}
        for qid, rels in dataset.qrels.items():
            for doc, rel in sorted(rels.items()):
                if rel >= 1:
                    rows["anchor"].append(dataset.queries[qid])
                    rows["positive"].append(doc_text(dataset.corpus[doc]))
        corpus_texts = [doc_text(d) for d in dataset.corpus.values()]
        # ST's range_min counts skipped candidates (0-based); our window is 1-based inclusive ranks
        out = mine_hard_negatives(datasets.Dataset.from_dict(rows), model, corpus=corpus_texts,
                                  range_min=args.window[0] - 1, range_max=args.window[1],
                                  num_negatives=args.num_negatives, sampling_strategy="top",
                                  output_format="n-tuple", batch_size=args.batch_size, use_faiss=True,
                                  verbose=False)
        text_to_id = {doc_text(d): i for i, d in dataset.corpus.items()}
        for row in out:
            negs = [text_to_id[row[f"negative_{i + 1}"]] for i in range(args.num_negatives)]
            negatives.setdefault(row["anchor"], negs)
    else:
        from densekit.mining.miner import MineConfig, mine

        options = {"dense": {"model": args.model, "cache_dir": args.cache_dir, "batch_size": args.batch_size,
                             "max_seq_length": args.max_seq_length, "backend": args.backend}}
        records = mine(dataset, MineConfig(retrievers=["dense"], sampler="top", num_negatives=args.num_negatives,
                                           window=tuple(args.window), retriever_options=options))
        for r in records:
            negatives.setdefault(r["query"], [n["doc_id"] for n in r["negatives"]])
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"side": args.side, "wall_s": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
            "docs": len(dataset.corpus), "queries": len(dataset.qrels), "negatives": negatives}


def child(args, side: str, cache_dir: str, backend: str = "torch") -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--backend", backend, "--data", args.data, "--split", args.split,
           "--model", args.model, "--num-negatives", str(args.num_negatives), "--window", *map(str, args.window),
           "--batch-size", str(args.batch_size), "--cache-dir", cache_dir]
    cmd += ["--max-docs", str(args.max_docs)]  # always: 0 (all) must reach the child too
    if args.max_queries:
        cmd += ["--max-queries", str(args.max_queries)]
    if args.max_seq_length:
        cmd += ["--max-seq-length", str(args.max_seq_length)]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(cmd + ["--child-out", out.name], check=True)
        return json.loads(Path(out.name).read_text())


def agreement(a: dict[str, list[str]], b: dict[str, list[str]]) -> float:
    shared = [q for q in a if q in b]
    hits = sum(len(set(a[q]) & set(b[q])) for q in shared)
    total = sum(max(len(a[q]), len(b[q])) for q in shared)
    return round(hits / total, 4) if total else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/beir/scifact"))
    p.add_argument("--split", default="train")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--max-docs", type=int, default=1500,
                   help="corpus size: the split's positives plus other documents up to this (0 = all)")
    p.add_argument("--max-queries", type=int, default=None, help="only the first N queries of the split")
    p.add_argument("--num-negatives", type=int, default=4)
    p.add_argument("--window", type=int, nargs=2, default=[10, 50])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--out", default="runs/bench/mining_vs_st.json")
    p.add_argument("--side", choices=["st", "ours", "export"], help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        Path(args.child_out).write_text(json.dumps(run_side(args)))
        return

    with tempfile.TemporaryDirectory() as cache:
        st = child(args, "st", cache)
        cold = child(args, "ours", cache)
        warm = child(args, "ours", cache)
        export = child(args, "export", cache, "onnx")
        export_int8 = child(args, "export", cache, "onnx-int8")
        onnx = child(args, "ours", cache, "onnx")  # its own embedding cache key: a cold run
        int8 = child(args, "ours", cache, "onnx-int8")
    runs = (("st", st), ("ours_cold", cold), ("ours_warm", warm), ("export_onnx", export),
            ("export_onnx_int8", export_int8), ("ours_cold_onnx", onnx), ("ours_cold_onnx_int8", int8))
    result = {
        "benchmark": "mining_vs_st", "model": args.model, "split": args.split, "docs": st["docs"],
        "queries": st["queries"], "window": args.window, "num_negatives": args.num_negatives,
        "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg()[0],
        "runs": {name: {k: v for k, v in r.items() if k != "negatives"}
                 for name, r in runs},
        "speedup_cold": round(st["wall_s"] / cold["wall_s"], 3),
        "speedup_cold_onnx": round(st["wall_s"] / onnx["wall_s"], 3),
        "speedup_cold_onnx_int8": round(st["wall_s"] / int8["wall_s"], 3),
        "speedup_warm": round(st["wall_s"] / warm["wall_s"], 3),
        "peak_ram_ratio_cold": round(cold["peak_rss_mb"] / st["peak_rss_mb"], 3),
        "peak_ram_ratio_warm": round(warm["peak_rss_mb"] / st["peak_rss_mb"], 3),
        "peak_ram_ratio_cold_onnx": round(onnx["peak_rss_mb"] / st["peak_rss_mb"], 3),
        "peak_ram_ratio_cold_onnx_int8": round(int8["peak_rss_mb"] / st["peak_rss_mb"], 3),
        "negative_agreement_with_st": agreement(cold["negatives"], st["negatives"]),
        "onnx_agreement_with_torch": agreement(onnx["negatives"], cold["negatives"]),
        "onnx_int8_agreement_with_torch": agreement(int8["negatives"], cold["negatives"]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
