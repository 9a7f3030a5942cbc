"""Print and save the SciFact table of the main job: BM25, zero-shot and fine-tuned, from their metrics.json.

BM25 is evaluated here too (bm25s, seconds), so the whole table comes from one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from densekit.data.beir import load_beir
from densekit.evaluation.beir import evaluate_and_write
from densekit.io import atomic_write_text
from densekit.mining.retrievers.bm25 import BM25Retriever

METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_100", "map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="scifact")
    parser.add_argument("--runs", default="runs/scifact")
    args = parser.parse_args()
    runs = Path(args.runs)
    dataset = load_beir(args.data, "test")
    bm25_dir = runs / "eval-bm25"
    run = BM25Retriever().retrieve(dataset.split_queries(), dataset.corpus, 100)
    evaluate_and_write({q: dict(h) for q, h in run.items()}, dataset, bm25_dir, {"model": "bm25s (k1=0.9, b=0.4)"})
    rows = [("BM25 (bm25s)", bm25_dir), ("all-MiniLM-L6-v2 zero-shot", runs / "eval-zeroshot"),
            ("all-MiniLM-L6-v2 fine-tuned (densekit)", runs / "eval-finetuned")]
    lines = ["| model | nDCG@10 | MRR@10 | Recall@100 | MAP |", "|---|---|---|---|---|"]
    for name, folder in rows:
        metrics = json.loads((folder / "metrics.json").read_text())
        lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRICS) + " |")
    table = "\n".join(lines)
    atomic_write_text(runs / "summary.md", f"SciFact test ({len(dataset.qrels)} queries)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
