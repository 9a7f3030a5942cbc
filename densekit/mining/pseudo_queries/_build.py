"""Write the pseudo-queries of a corpus as a BEIR folder."""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path

from tqdm.auto import tqdm

from densekit.data.beir import load_beir, resolve_beir_dir
from densekit.errors import ConfigError
from densekit.io import atomic_dir
from densekit.mining.pseudo_queries import PREFIX, STRATEGIES


def corpus_file(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise ConfigError(f"{folder}: no corpus.jsonl(.gz)")


def strategy(name: str, options: dict):
    fn = STRATEGIES.get_checked(name, options, internal=("doc_id", "doc", "rng"))
    return functools.partial(fn, **options)


def make_pseudo_queries(opts) -> dict:
    make = strategy(opts.strategy, opts.strategy_options)
    folder = resolve_beir_dir(opts.data)
    dataset = load_beir(folder, split=None)
    excluded: set[str] = set()
    for split in opts.exclude_splits:
        if split.lower() != "none" and (folder / "qrels" / f"{split}.tsv").exists():
            excluded |= {d for docs in load_beir(folder, split).qrels.values() for d in docs}
    doc_ids = [d for d in dataset.corpus if d not in excluded]
    rng = random.Random(opts.seed)
    if opts.max_docs and opts.max_docs < len(doc_ids):
        doc_ids = sorted(rng.sample(doc_ids, opts.max_docs), key=doc_ids.index)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for doc_id in tqdm(doc_ids, desc=f"pseudo-queries ({opts.strategy})"):
        for k, text in enumerate(make(doc_id, dataset.corpus[doc_id], rng)):
            qid = f"{PREFIX}{opts.strategy}-{doc_id}-{k}"
            queries[qid], qrels[qid] = text, {doc_id: 1}
    made = len(queries)
    if opts.include_split:
        real = load_beir(folder, opts.include_split)
        for qid, docs in real.qrels.items():
            queries[qid] = real.queries[qid]
            qrels[qid] = dict(docs)
    if not queries:
        raise ConfigError(f"strategy '{opts.strategy}' made no query from {len(doc_ids)} documents")
    source = corpus_file(folder).resolve()
    with atomic_dir(opts.output) as tmp:
        os.symlink(source, tmp / source.name)
        (tmp / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n"
                                                   for q, t in queries.items()), encoding="utf-8")
        (tmp / "qrels").mkdir()
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, docs in qrels.items() for d, r in docs.items()]
        (tmp / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"output": str(opts.output), "strategy": opts.strategy, "documents": len(doc_ids),
            "pseudo_queries": made, "real_queries": len(queries) - made, "excluded_documents": len(excluded)}
