"""Small builders for test data: BEIR folders written to a temp dir, and SciFact subsets."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path


def write_beir(folder: Path, corpus: dict, queries: dict, qrels: dict[str, dict[str, dict[str, int]]],
               gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"_id": d, "title": doc.get("title", ""), "text": doc["text"]}) + "\n"
                    for d, doc in corpus.items())
    if gz:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        (folder / "corpus.jsonl").write_text(lines, encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rels in qrels.items():
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, docs in rels.items() for d, r in docs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def scifact_subset(scifact_dir: Path, target: Path, n_queries: int = 40, n_docs: int = 300, seed: int = 0,
                   splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A real SciFact slice: ``n_queries`` per split with all their positives, padded with random documents."""
    from densekit.data.beir import load_corpus, load_qrels, load_queries

    corpus = load_corpus(scifact_dir / "corpus.jsonl.gz")
    queries = load_queries(scifact_dir / "queries.jsonl")
    rng = random.Random(seed)
    qrels, keep_docs, keep_queries = {}, set(), set()
    for split in splits:
        full = load_qrels(scifact_dir / "qrels" / f"{split}.tsv")
        chosen = sorted(full)[:n_queries]
        qrels[split] = {q: full[q] for q in chosen}
        keep_queries.update(chosen)
        for q in chosen:
            keep_docs.update(full[q])
    others = sorted(set(corpus) - keep_docs)
    keep_docs.update(rng.sample(others, max(0, n_docs - len(keep_docs))))
    sub_corpus = {d: corpus[d] for d in corpus if d in keep_docs}
    return write_beir(target, sub_corpus, {q: queries[q] for q in queries if q in keep_queries}, qrels)


def mine_json(dataset, config) -> list[dict]:
    """``densekit.mining.miner.mine`` as the JSONL file holds it (one dict per record)."""
    from densekit.mining.miner import mine

    return [record.to_json() for record in mine(dataset, config)]
