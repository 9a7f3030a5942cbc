"""Turn candidate lists into training records: positives never come back as negatives.

One :class:`~densekit.data.training.TrainingRecord` per (query, positive) pair, its negatives carrying their
audit trail (source, rank, score, teacher score, weight, cluster) and the record the dropped candidates.

With several retrievers, each one's sampled negatives are interleaved (first of each, then
second of each, ...) and duplicates dropped, so every source contributes evenly. With a teacher,
``oversample * num_negatives`` candidates per query are rescored, the filters of ``DenoiseConfig``
drop likely false negatives (kept in ``dropped`` for auditing) and the first ``num_negatives``
survivors are kept; a query left short is topped up from the next candidates of its window (``refill``, in
rank order; such records carry ``refilled``: how many candidates were added for rescoring).

The corpus may be a dict or a memory-mapped :class:`~densekit.data.corpus.DocStore`: only the candidates' and the
positives' texts are read. Every stage is resumable: corpus embeddings are cached in shards, each retriever's
candidate lists are cached under ``cache_dir/candidates`` and teacher scores in SQLite under
``cache_dir/teacher_scores``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from densekit.data.beir import BeirDataset, doc_text
from densekit.data.corpus import corpus_fingerprint, corpus_ids
from densekit.data.records import Negative, TrainingRecord
from densekit.errors import ConfigError, DataError
from densekit.io import atomic_write_json
from densekit.mining.denoise import DenoiseConfig
from densekit.mining.near_duplicates import DEFAULT_THRESHOLD, NearDuplicateFilter, near_duplicate_drop
from densekit.mining.pseudo_queries import is_pseudo_query, without_query
from densekit.mining.registry import RETRIEVERS, SAMPLERS
from densekit.mining.rescoring import denoise_pools, pool_item, refill_short_pools, rounded
from densekit.mining.samplers.window import Candidate, SampleContext
from densekit.models import texts_fingerprint
from densekit.options import option

logger = logging.getLogger(__name__)

# options the ivf-local retriever takes over from the dense retriever's, unless set for it
_MODEL_KEYS = ("model", "batch_size", "bf16", "cache_dir", "max_seq_length", "backend", "memory_budget", "dtype",
               "shard_size")


@dataclass
class MineConfig:
    """candidates and sampling"""

    retrievers: list[str] = option(default_factory=lambda: ["bm25", "dense"], flag="--retriever",
                                   help="candidate retriever, repeatable: bm25, dense, hybrid, cluster")
    sampler: str = option("top", help="how negatives are picked: top, random-in-window, star")
    num_negatives: int = option(4, help="negatives per query")
    window: tuple[int, int] = option((10, 50), metavar=("START", "END"),
                                     help="1-based rank window (inclusive) negatives are drawn from")
    seed: int = option(42, help="seed of the random samplers")
    retriever_options: dict[str, dict[str, Any]] = option(
        default_factory=dict, flag="--retriever-option", nested=True,
        help="retriever option, repeatable: e.g. bm25.k1=1.2, hybrid.fusion=score, ivf-local.n_clusters=64")
    sampler_options: dict[str, Any] = option(default_factory=dict, flag="--sampler-option",
                                              help="sampler option, repeatable: e.g. hard_ratio=0.5 for star")
    near_duplicate_threshold: float = option(
        DEFAULT_THRESHOLD, help="drop a candidate whose word 3-grams overlap a positive's this much (overlap "
                                "coefficient; 0 turns the filter off); recorded as near_duplicate in 'dropped'")
    cut_pseudo_query_from_positive: bool = option(
        False, help="cut a pseudo-query's own words (a title, a sentence) out of its positive, as the inverse cloze "
                    "task does (densekit/mining/pseudo_queries; on SciFact dev, titles did better left in)")
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    # candidate lists and teacher scores are cached here (None: no cache, nothing resumes)
    cache_dir: str | None = None

    def validate(self) -> None:
        if not 0.0 <= self.near_duplicate_threshold <= 1.0:
            raise ConfigError(f"--near-duplicate-threshold must be in [0, 1], got {self.near_duplicate_threshold}")
        low, high = self.window
        if low < 1 or high < low:
            raise ConfigError(f"rank window must satisfy 1 <= start <= end, got {low}-{high}")
        if self.num_negatives < 1:
            raise ConfigError("num_negatives must be at least 1")
        if not self.retrievers:
            raise ConfigError("at least one candidate retriever is needed")
        for name in self.retrievers:
            RETRIEVERS.get(name)
        SAMPLERS.get_checked(self.sampler, self.sampler_options,
                             internal=("candidates", "n", "window", "rng", "context"))
        self.denoise.validate()

    def options_for(self, name: str) -> dict[str, Any]:
        """A retriever's options; hybrid and cluster inherit the plain bm25/dense options they build on."""
        base = self.retriever_options
        opts = dict(base.get(name, {}))
        if name == "hybrid":
            components = opts.get("components", ["bm25", "dense"])
            inner = {c: dict(base.get(c, {})) for c in components}
            for comp, comp_opts in (opts.get("options") or {}).items():
                inner.setdefault(comp, {}).update(comp_opts)
            opts["options"] = inner
        elif name == "ivf-local":
            for key in _MODEL_KEYS:
                if key in base.get("dense", {}) and key not in opts:
                    opts[key] = base["dense"][key]
        return opts


def build_retriever(name: str, options: dict[str, Any]):
    return RETRIEVERS.get_checked(name, options, internal=("name",))(**options)


def _candidates_key(name: str, options: dict, depth: int, queries: dict[str, str], corpus_fp: str) -> str:
    blob = json.dumps({"name": name, "options": options, "depth": depth}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode())
    digest.update(texts_fingerprint([f"{q}\t{t}" for q, t in queries.items()]).encode())
    digest.update(corpus_fp.encode())
    return digest.hexdigest()[:20]


def retrieve_candidates(name: str, options: dict, queries: dict[str, str], corpus: dict, depth: int,
                        cache_dir: str | None, corpus_fp: str) -> tuple[dict, dict[str, int], dict[str, int]]:
    """(candidates, doc_clusters, query_clusters) of one retriever; cached when this exact stage ran."""
    path = None
    if cache_dir:
        key = _candidates_key(name, options, depth, queries, corpus_fp)
        path = Path(cache_dir) / "candidates" / f"{name}-{key}.json"
        if path.exists():
            logger.info("candidates cache hit for %s: %s", name, path)
            data = json.loads(path.read_text(encoding="utf-8"))
            cands = {q: [(d, s) for d, s in lst] for q, lst in data["candidates"].items()}
            return cands, data.get("doc_clusters", {}), data.get("query_clusters", {})
    retriever = build_retriever(name, options)
    cands = retriever.retrieve(queries, corpus, depth)
    doc_clusters = getattr(retriever, "doc_clusters", {}) or {}
    if doc_clusters:  # only the documents that can become negatives
        seen = {d for lst in cands.values() for d, _ in lst}
        doc_clusters = {d: c for d, c in doc_clusters.items() if d in seen}
    query_clusters = getattr(retriever, "query_clusters", {}) or {}
    if path is not None:
        atomic_write_json(path, {"candidates": cands, "doc_clusters": doc_clusters,
                                 "query_clusters": query_clusters})
    return cands, doc_clusters, query_clusters


def select_negatives(ranked: list[tuple[str, float]], positives: set[str], positive_texts: set[str],
                     corpus: dict, sampler, n: int, window: tuple[int, int], rng: random.Random,
                     source: str, context: SampleContext | None = None,
                     near_duplicates: NearDuplicateFilter | None = None) -> tuple[list[Candidate], list[dict]]:
    """(the sampled candidates, the window's near-duplicates of a positive that were left out)."""
    # ranks are positions in the retriever's own list, so they match its TREC run
    candidates = [Candidate(doc, score, rank, source) for rank, (doc, score) in enumerate(ranked, start=1)
                  if doc not in positives and doc_text(corpus[doc]) not in positive_texts]
    dropped = []
    if near_duplicates is not None:
        kept = []
        for cand in candidates:
            similar = near_duplicates.near_duplicate_of(doc_text(corpus[cand.doc_id]), positive_texts)
            if similar is None:
                kept.append(cand)
            elif window[0] <= cand.rank <= window[1]:
                dropped.append(near_duplicate_drop(cand, similar))
        candidates = kept
    picked = sampler(candidates, n, window, rng, context=context)
    # a random draw may hit a copy of the positive
    picked = [Candidate(c.doc_id, rounded(c.score), c.rank, c.source or source) for c in picked
              if doc_text(corpus[c.doc_id]) not in positive_texts]
    if near_duplicates is not None:  # nor a near-copy (random draws come from outside the ranked list)
        picked = [c for c in picked if c.source != "random"
                  or near_duplicates.near_duplicate_of(doc_text(corpus[c.doc_id]), positive_texts) is None]
    return picked, dropped


def check_inputs(dataset: BeirDataset) -> tuple[dict[str, str], dict[str, set[str]]]:
    qrels_path = str(dataset.path / "qrels" / f"{dataset.split}.tsv")
    if not dataset.corpus:
        raise DataError("the corpus is empty: nothing to mine negatives from", path=str(dataset.path))
    if not dataset.qrels:
        raise DataError("mining needs qrels (the positives) for the chosen split", path=str(dataset.path))
    missing = [qid for qid in dataset.qrels if qid not in dataset.queries]
    if missing:
        raise DataError(f"{len(missing)} judged queries are not in queries.jsonl (e.g. '{missing[0]}')",
                        path=qrels_path)
    positives = {qid: {d for d, rel in rels.items() if rel >= 1} for qid, rels in dataset.qrels.items()}
    no_positive = [qid for qid, docs in positives.items() if not docs]
    if no_positive:
        raise DataError(f"{len(no_positive)} queries have no positive judgment (e.g. '{no_positive[0]}')",
                        path=qrels_path)
    unknown = [(q, d) for q, docs in positives.items() for d in docs if d not in dataset.corpus]
    if unknown:
        raise DataError(f"positive '{unknown[0][1]}' of query '{unknown[0][0]}' is not in the corpus",
                        path=qrels_path)
    return {qid: dataset.queries[qid] for qid in dataset.qrels}, positives


def mine(dataset: BeirDataset, config: MineConfig) -> list[TrainingRecord]:
    config.validate()
    queries, positives = check_inputs(dataset)
    corpus = dataset.corpus
    denoise = config.denoise
    pool_size = config.num_negatives * (denoise.oversample if denoise.enabled else 1)
    depth = config.window[1] + max(len(p) for p in positives.values())
    sampler = functools.partial(SAMPLERS.get(config.sampler), **config.sampler_options)
    all_ids = corpus_ids(corpus)  # read on demand for a memory-mapped corpus
    corpus_fp = corpus_fingerprint(corpus) if config.cache_dir else ""
    pos_texts = {qid: {doc_text(corpus[d]) for d in pos} for qid, pos in positives.items()}

    per_source: dict[str, dict[str, list[Candidate]]] = {}
    near_duplicates = (NearDuplicateFilter(config.near_duplicate_threshold) if config.near_duplicate_threshold > 0
                       else None)
    near_dropped: dict[str, dict[str, dict]] = {qid: {} for qid in queries}
    ranked: dict[str, dict] = {}
    doc_clusters: dict[str, int] = {}
    query_clusters: dict[str, int] = {}
    for name in config.retrievers:
        cands, d_clusters, q_clusters = retrieve_candidates(name, config.options_for(name), queries, corpus,
                                                            depth, config.cache_dir, corpus_fp)
        ranked[name] = cands
        doc_clusters.update(d_clusters)
        query_clusters.update(q_clusters)
        rng = random.Random(config.seed)
        per_source[name] = {}
        for qid in tqdm(queries, desc=f"sample {name}"):
            picked, dropped = select_negatives(cands.get(qid, []), positives[qid], pos_texts[qid], corpus, sampler,
                                               pool_size, config.window, rng, name,
                                               SampleContext(all_ids, positives[qid]), near_duplicates)
            per_source[name][qid] = picked
            for drop in dropped:
                near_dropped[qid].setdefault(drop["doc_id"], drop)

    pools: dict[str, list[Negative]] = {}
    for qid in queries:
        merged, seen = [], set()
        for group in zip_longest(*(per_source[name][qid] for name in config.retrievers)):
            for cand in group:
                if cand is not None and cand.doc_id not in seen:
                    seen.add(cand.doc_id)
                    merged.append(pool_item(cand, corpus, doc_clusters))
        pools[qid] = merged[:pool_size]

    extras: dict[str, dict] = {qid: {} for qid in queries}
    if denoise.enabled:
        pools, extras = denoise_pools(queries, positives, corpus, pools, denoise, config.num_negatives,
                                      config.cache_dir)
        if denoise.refill:
            refill_short_pools(queries, positives, pos_texts, corpus, ranked, doc_clusters, pools, extras, denoise,
                               config.num_negatives, config.window, config.cache_dir, near_duplicates, near_dropped)
    for qid, drops in near_dropped.items():
        if drops:
            extras[qid]["dropped"] = list(drops.values()) + extras[qid].get("dropped", [])
    n_near = sum(len(d) for d in near_dropped.values())
    if n_near:
        logger.info("left out %d near-duplicates of positives (overlap >= %.2f)", n_near,
                    config.near_duplicate_threshold)

    records = []
    empty = [qid for qid in queries if not pools[qid]]
    if empty:
        logger.warning("%d of %d queries are left without any negative and are skipped (e.g. '%s')",
                       len(empty), len(queries), empty[0])
    for qid in queries:
        negatives = pools[qid][:config.num_negatives]
        if not negatives:
            continue
        audit = dict(extras[qid])
        if qid in query_clusters:
            audit["query_cluster"] = query_clusters[qid]
        for pid in sorted(positives[qid]):
            positive = doc_text(corpus[pid])
            if config.cut_pseudo_query_from_positive and is_pseudo_query(qid):
                positive = without_query(queries[qid], positive)
            records.append(TrainingRecord(query=queries[qid], positive=positive,
                                          negatives=[replace(n) for n in negatives], query_id=qid,
                                          positive_id=pid, audit=audit))
    return records
