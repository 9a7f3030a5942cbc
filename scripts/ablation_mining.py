"""Mining ablation on SciFact: one row per negative-mining strategy, every row trained and evaluated the same way.

Each row mines negatives for the train queries (``densekit mine``), trains all-MiniLM-L6-v2 with the main
job's one-epoch recipe (InfoNCE, 1 epoch, batch 32, lr 3e-5, 2 hard negatives, seq 128) and evaluates nDCG@10 (+ AUC) on
the test queries at seq 256 (``densekit eval``). Every stage is skipped when its output exists, so a rerun
resumes; the table is rewritten after each row.

    python scripts/ablation_mining.py --out runs/ablation --rows none,bm25,dense,hybrid,hybrid+star

Rows (see ``ROWS``): ``none`` trains on in-batch negatives only; ``st-dense`` mines with
sentence-transformers' ``mine_hard_negatives`` (same model, window and count) for the downstream comparison.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from densekit.io import atomic_write_json

COMMON_MINE = ["--data", "scifact", "--split", "train", "--num-negatives", "2", "--window", "10", "50",
               "--cache-dir", "runs/cache"]
DENOISE = ["--teacher", "cross-encoder", "--teacher-option", "max_seq_length=256", "--perc-pos", "0.95",
           "--min-positive-score", "0.1"]
DENOISE_BGE = ["--teacher", "bi-encoder", "--teacher-model", "BAAI/bge-small-en",
               "--teacher-option", "max_seq_length=512",
               "--teacher-option", "query_prefix=Represent this sentence for searching relevant passages: ",
               "--perc-pos", "0.95", "--oversample", "3"]
# trust-gated: the teacher only speaks on queries where it believes the judged positive (p >= 0.5), and then
# drops only negatives it scores above that positive
DENOISE_GATED = ["--teacher", "cross-encoder", "--teacher-option", "max_seq_length=256", "--perc-pos", "1.0",
                 "--min-positive-score", "0.5"]
# DCLR-style: nothing dropped, negatives the (trusted) teacher scores near the positive are down-weighted
DENOISE_SOFT = ["--teacher", "cross-encoder", "--teacher-option", "max_seq_length=256", "--soft-weights",
                "--min-positive-score", "0.5"]
STAR = ["--sampler", "star", "--sampler-option", "hard_ratio=0.5"]

# row -> (description, mine arguments or None, extra train arguments)
ROWS: dict[str, tuple[str, list[str] | None, list[str]]] = {
    "none": ("no hard negatives (in-batch only)", None, ["--num-negatives", "0"]),
    "bm25": ("BM25 (bm25s), ranks 10-50", ["--retriever", "bm25"], []),
    "dense": ("dense (MiniLM on FAISS), ranks 10-50", ["--retriever", "dense"], []),
    "hybrid": ("hybrid (RRF of BM25 + dense), ranks 10-50", ["--retriever", "hybrid"], []),
    "hybrid+star": ("hybrid + STAR (1 hard + 1 random)", ["--retriever", "hybrid", *STAR], []),
    "hybrid+star+ce": ("hybrid + STAR + cross-encoder denoising (TopK-PercPos 0.95)",
                       ["--retriever", "hybrid", *STAR, *DENOISE], []),
    "hybrid+star+ce+cluster": ("hybrid + STAR + denoising + cluster-grouped batches (masked)",
                               ["--retriever", "hybrid", *STAR, *DENOISE],
                               ["--cluster-batches", "auto", "--loss-option", "false_negative_margin=0.1"]),
    "dense-int8": ("dense, mined with the onnx-int8 encoder (int8 weights, ~2.5x faster encoding)",
                   ["--retriever", "dense", "--backend", "onnx-int8"], []),
    "dense+ce": ("dense + cross-encoder denoising (TopK-PercPos 0.95)", ["--retriever", "dense", *DENOISE], []),
    "dense+ce-gated": ("dense + cross-encoder denoising, trust-gated (positive >= 0.5; drop above the positive)",
                       ["--retriever", "dense", *DENOISE_GATED], []),
    "dense+ce-soft": ("dense + cross-encoder soft weights (DCLR-style, trust-gated, nothing dropped)",
                      ["--retriever", "dense", *DENOISE_SOFT], ["--negative-weights"]),
    "dense+bge": ("dense + bi-encoder denoising (bge-small-en int8 ONNX, TopK-PercPos 0.95)",
                  ["--retriever", "dense", *DENOISE_BGE], []),
    "ivf-local": ("ivf-local: members of the query's nearest k-means clusters (was `cluster`), ranks 10-50",
                  ["--retriever", "ivf-local"], []),
    "st-dense": ("dense, mined by sentence-transformers' mine_hard_negatives", None, []),
}
DEFAULT_SEED = 42
TRAIN = ["--epochs", "1", "--batch-size", "32", "--learning-rate", "3e-5", "--max-seq-length", "128",
         "--save-steps", "10"]


def sh(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)


def mine_with_st(out: Path) -> None:
    """sentence-transformers' miner over the same corpus, written in densekit's training JSONL."""
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from densekit.data.beir import doc_text, load_beir
    from densekit.io import atomic_write_jsonl
    from densekit.models import resolve_model

    dataset = load_beir("scifact", "train")
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    rows: dict[str, list[str]] = {"anchor": [], "positive": []}
    for qid, rels in dataset.qrels.items():
        for doc, rel in sorted(rels.items()):
            if rel >= 1:
                rows["anchor"].append(dataset.queries[qid])
                rows["positive"].append(doc_text(dataset.corpus[doc]))
    mined = mine_hard_negatives(datasets.Dataset.from_dict(rows), model,
                                corpus=[doc_text(d) for d in dataset.corpus.values()], range_min=9, range_max=50,
                                num_negatives=2, sampling_strategy="top", output_format="n-tuple",
                                batch_size=64, use_faiss=True)
    records = [{"query": r["anchor"], "positive": r["positive"], "negatives": [r["negative_1"], r["negative_2"]]}
               for r in mined]
    atomic_write_jsonl(out, records)


def row_dir(out: Path, name: str, seed: int) -> Path:
    """The default seed keeps the plain row folder (earlier results stay valid); other seeds get their own."""
    return out / name if seed == DEFAULT_SEED else out / f"{name}.seed{seed}"


def run_row(name: str, out: Path, seed: int = DEFAULT_SEED) -> dict:
    _, mine_args, train_args = ROWS[name]
    row = row_dir(out, name, seed)
    row.mkdir(parents=True, exist_ok=True)
    log = row / "log.txt"
    mined = out / name / "mined.jsonl"  # mining is deterministic: every seed trains on the same negatives
    mined.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    if not mined.exists():
        start = time.time()
        if name == "none":  # the negatives are ignored (--num-negatives 0): any mined file will do
            sh(["densekit", "mine", *COMMON_MINE, "--retriever", "bm25", "--output", str(mined)], log)
        elif name == "st-dense":
            mine_with_st(mined)
        else:
            sh(["densekit", "mine", *COMMON_MINE, *mine_args, "--output", str(mined)], log)
        timings["mine_s"] = round(time.time() - start, 1)
    model = row / "model"
    if not model.exists():
        start = time.time()
        sh(["densekit", "train", "--model", "all-MiniLM-L6-v2", "--data", str(mined), "--output", str(model),
            *TRAIN, "--seed", str(seed), *train_args], log)
        timings["train_s"] = round(time.time() - start, 1)
    metrics = row / "eval" / "metrics.json"
    if not metrics.exists():
        start = time.time()
        sh(["densekit", "eval", "--model", str(model), "--data", "scifact", "--split", "test", "--max-seq-length",
            "256", "--auc", "--output", str(row / "eval")], log)
        timings["eval_s"] = round(time.time() - start, 1)
    times_path = row / "timings.json"
    old = json.loads(times_path.read_text()) if times_path.exists() else {}
    atomic_write_json(times_path, {**old, **timings})
    return {**read_result(row, name, seed), **old, **timings}


def read_result(folder: Path, name: str, seed: int) -> dict:
    """One finished (row, seed): its nDCG@10, R@100 and AUC figures from ``densekit eval``'s files."""
    result = json.loads((folder / "eval" / "metrics.json").read_text())
    auc_path = folder / "eval" / "auc.json"
    auc = json.loads(auc_path.read_text()) if auc_path.exists() else {}
    return {"row": name, "seed": seed, "description": ROWS[name][0], "ndcg_at_10": result["ndcg_at_10"],
            "recall_at_100": result["recall_at_100"], "global_auc": auc.get("global_auc"),
            "mean_per_query_auc": auc.get("mean_per_query_auc")}


def collect(out: Path, names: list[str]) -> list[dict]:
    """Every finished (row, seed) under ``out``, so the table covers runs made by other invocations too."""
    results = []
    for name in names:
        for folder in sorted(out.glob(f"{glob.escape(name)}*")):
            seed_text = folder.name[len(name):]
            if seed_text and not seed_text.startswith(".seed"):
                continue
            seed = int(seed_text[len(".seed"):]) if seed_text else DEFAULT_SEED
            if (folder / "eval" / "metrics.json").exists():
                results.append(read_result(folder, name, seed))
    return results


def write_table(out: Path, results: list[dict]) -> None:
    """One line per row: the default seed's scores and, over all seeds run, mean +- sample std of nDCG@10."""
    lines = ["| row | negatives | nDCG@10 (seed 42) | R@100 | AUC | seeds | nDCG@10 mean +- std |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["row"] for r in results):
        runs = [r for r in results if r["row"] == name]
        first = next((r for r in runs if r["seed"] == DEFAULT_SEED), runs[0])
        auc = f"{first['global_auc']:.4f}" if first.get("global_auc") is not None else "-"
        scores = [r["ndcg_at_10"] for r in runs]
        spread = f"{statistics.mean(scores):.4f} +- {statistics.stdev(scores):.4f}" if len(scores) > 1 else "-"
        lines.append(f"| {name} | {first['description']} | {first['ndcg_at_10']:.4f} | {first['recall_at_100']:.4f} "
                     f"| {auc} | {len(scores)} | {spread} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default=str(DEFAULT_SEED), help="comma-separated training seeds per row")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [r for r in args.rows.split(",") if r]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s): {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for seed in seeds:
        for name in names:
            print(json.dumps(run_row(name, out, seed)), flush=True)
            write_table(out, collect(out, list(ROWS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
