"""The teacher-free near-duplicate filter: planted near-copies of SciFact positives are never mined as negatives,
and the audit trail says why."""

from __future__ import annotations

import re

import pytest

from densekit.data.beir import load_beir
from densekit.mining.miner import MineConfig
from densekit.mining.near_duplicates import NearDuplicateFilter, overlap, shingles
from tests.helpers import mine_json, write_beir


@pytest.fixture(scope="module")
def planted(scifact_dir, tmp_path_factory):
    """8 SciFact train queries, their positives and 300 other documents, plus for every positive a near-copy:
    its abstract without the title and the last sentence."""
    full = load_beir(scifact_dir, "train")
    qids = sorted(full.qrels)[:8]
    positives = sorted({d for q in qids for d in full.qrels[q]})
    corpus = {d: full.corpus[d] for d in positives}
    corpus.update({d: full.corpus[d] for d in sorted(set(full.corpus) - set(positives))[:300]})
    for pid in positives:
        sentences = re.split(r"(?<=[.!?])\s+", full.corpus[pid]["text"].strip())
        corpus[f"copy-{pid}"] = {"title": "", "text": " ".join(sentences[:-1]) if len(sentences) > 1
                                 else sentences[0]}
    folder = write_beir(tmp_path_factory.mktemp("near") / "beir", corpus, {q: full.queries[q] for q in qids},
                        {"train": {q: full.qrels[q] for q in qids}})
    return load_beir(folder, "train")


def own_copies(records):
    """The negatives that are a near-copy of their own query's positive(s), and the near-duplicate drops."""
    positives: dict[str, set[str]] = {}
    for r in records:
        positives.setdefault(r["query_id"], set()).add(f"copy-{r['positive_id']}")
    negs = [n["doc_id"] for r in records for n in r["negatives"] if n["doc_id"] in positives[r["query_id"]]]
    drops = [d for r in records for d in r.get("dropped", []) if d["reason"] == "near_duplicate"]
    return negs, drops


def test_planted_near_copies_are_mined_without_the_filter_and_dropped_with_it(planted):
    config = dict(retrievers=["bm25"], num_negatives=4, window=(1, 20))
    unfiltered, _ = own_copies(mine_json(planted, MineConfig(**config, near_duplicate_threshold=0.0)))
    assert len(unfiltered) >= 8  # without the filter they are the hardest "negatives" of their own query
    records = mine_json(planted, MineConfig(**config))
    negs, near = own_copies(records)
    assert negs == []
    assert {d["doc_id"] for d in near} >= set(unfiltered)
    assert all(d["overlap"] >= 0.8 and 1 <= d["rank"] <= 20 for d in near)
    assert all(len(r["negatives"]) == 4 for r in records)  # the window refills what the filter left out


def test_topical_neighbours_are_not_near_duplicates(planted):
    """The closest true negatives share few 3-grams with the positive: the 0.8 threshold is far above them."""
    filt = NearDuplicateFilter()
    scores = []
    for rels in planted.qrels.values():
        pos = {f"{planted.corpus[p]['title']} {planted.corpus[p]['text']}".strip() for p in rels}
        for doc_id, doc in planted.corpus.items():
            if doc_id in rels or doc_id.startswith("copy-"):
                continue
            text = f"{doc['title']} {doc['text']}".strip()
            scores.append(max(overlap(shingles(text), shingles(p)) for p in pos))
            assert filt.near_duplicate_of(text, pos) is None
    assert max(scores) < 0.3
