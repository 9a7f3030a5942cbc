"""Peak RAM, time and disk of every corpus-sized step from 1M to 10M documents, against a memory budget.

The corpus is real-looking text: each synthetic document recombines 3-8 sentences drawn at random from SciFact
abstracts (the sentences of the judged abstracts and of the first ``--source-docs`` others), and the judged
abstracts of ``--queries`` SciFact queries (train and test, merged into one ``train`` split) are in it as they
are. It is written as a BEIR folder and every step reads it the way a user's corpus is read.

Each step runs in a fresh process (so its peak RSS is its own) and reports wall time, peak RSS (VmHWM: anonymous
memory plus the file pages it has mapped) and the peak of anonymous memory alone (sampled every 50 ms):

* ``import``: corpus.jsonl converted into the memory-mapped corpus (``densekit.data.corpus.DocStore``);
* ``encode``: ``densekit encode --num-shards N --shard-index 0`` with the real model: one worker's slice of
  ``--encode-docs`` documents, the rest of the corpus never loaded;
* ``mine``: ``densekit.mining.mine`` for the queries, dense retriever streaming the embedding store through
  exact FAISS top-k (``ExactScan``), once per ``--mine-budgets`` value;
* ``index``: IVF-PQ trained on a sample, filled block by block, lists merged on disk (``--on-disk``);
* ``serve``: the on-disk index and the memory-mapped corpus loaded as ``densekit serve`` loads them, the queries
  searched and their hits' texts fetched; recall@10 against the exact top-10 the miner found;
* ``baseline`` (``--baseline-sizes``): mining as densekit did before the embedding store, the peer of ``mine``:
  the corpus as a dict and the whole float32 matrix in RAM in a flat FAISS index.

Encoding 10M documents with all-MiniLM-L6-v2 takes days on this 2-core CPU, so the embedding store the other
steps read is made of synthetic vectors: each document's vector is the normalised mean of its sentences' real
MiniLM embeddings (float16, written with the store writer; the ``vectors`` step, not measured). Queries are
encoded by the model as usual.

    python scripts/bench/corpus_scale.py --sizes 1000000 5000000 10000000 --work-dir /work/scratch \\
        --out runs/bench/corpus_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SHARD_SIZE = 16384
BYTES_PER_DOC_NEEDED = 2900  # corpus.jsonl + its Arrow copy + float16 vectors + index, with some room


# --- measuring ----------------------------------------------------------------------------------------------------

def status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Peak:
    """Peak RSS of the block: VmHWM (reset at the start) and the sampled peak of anonymous memory."""

    def __enter__(self) -> Peak:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM (Linux >= 4.0)
        self.start_mb, self.anon_mb, self._stop = status_mb("VmRSS"), status_mb("RssAnon"), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.anon_mb = max(self.anon_mb, status_mb("RssAnon"))
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop = True
        self._thread.join()
        self.anon_mb = max(self.anon_mb, status_mb("RssAnon"))
        self.peak_mb = status_mb("VmHWM")

    def report(self, **extra) -> dict:
        return {"seconds": round(self.seconds, 1), "peak_rss_mb": round(self.peak_mb), "peak_anon_mb":
                round(self.anon_mb), "rss_at_start_mb": round(self.start_mb), **extra}


def folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


# --- the synthetic corpus -----------------------------------------------------------------------------------------

def sentences_of(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def sentence_pool(args):
    """(queries, qrels, positive ids, pool of sentences, sentence rows of each positive)."""
    from densekit.data.beir import load_corpus, load_qrels, load_queries

    data = Path(args.data)
    corpus = load_corpus(data / "corpus.jsonl.gz")
    queries = load_queries(data / "queries.jsonl")
    merged: dict[str, dict[str, int]] = {}
    for split in ("train", "test"):
        for qid, rels in load_qrels(data / "qrels" / f"{split}.tsv").items():
            merged.setdefault(qid, {}).update(rels)
    qids = sorted(merged)[:args.queries]
    qrels = {q: merged[q] for q in qids}
    positives = sorted({d for q in qids for d, rel in qrels[q].items() if rel >= 1})
    pool: list[str] = []
    rows: dict[str, list[int]] = {}
    for doc_id in dict.fromkeys(positives + list(corpus)[:args.source_docs]):
        sents = sentences_of(corpus[doc_id]["text"]) or [corpus[doc_id]["text"]]
        rows[doc_id] = list(range(len(pool), len(pool) + len(sents)))
        pool += sents
    return corpus, {q: queries[q] for q in qids}, qrels, positives, pool, rows


def sentence_vectors(args, pool: list[str]) -> np.ndarray:
    from densekit.models import load_model
    from densekit.vectors import encode_cached

    return encode_cached(load_model(args.model), pool, args.cache_dir, desc="encode sentences")


def generate(args, work: Path) -> dict:
    """The BEIR folder and, per synthetic document, the sentences it is made of (for the vectors step)."""
    corpus, queries, qrels, positives, pool, rows = sentence_pool(args)
    beir = work / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, rels in qrels.items() for d, r in rels.items()))
    (work / "positives.json").write_text(json.dumps([rows[d] for d in positives]))
    n_synth = args.docs - len(positives)
    picks = np.lib.format.open_memmap(work / "synthetic.npy", mode="w+", dtype=np.int32, shape=(n_synth, 8))
    rng = np.random.default_rng(args.seed)
    with open(beir / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id in positives:
            doc = corpus[doc_id]
            out.write(json.dumps({"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}) + "\n")
        for start in range(0, n_synth, 65536):
            count = min(65536, n_synth - start)
            lengths = rng.integers(3, 9, size=count)
            idx = rng.integers(0, len(pool), size=(count, 8)).astype(np.int32)
            idx[np.arange(8)[None, :] >= lengths[:, None]] = -1
            picks[start:start + count] = idx
            lines = []
            for i, row in enumerate(idx):
                sents = [pool[j] for j in row if j >= 0]
                lines.append(json.dumps({"_id": f"syn{start + i}", "title": " ".join(sents[0].split()[:8]),
                                         "text": " ".join(sents)}))
            out.write("\n".join(lines) + "\n")
    picks.flush()
    return {"docs": args.docs, "queries": len(queries), "positives": len(positives), "sentences": len(pool),
            "corpus_jsonl_mb": round((beir / "corpus.jsonl").stat().st_size / 2**20, 1)}


def vectors(args, work: Path) -> dict:
    """The float16 embedding store of synthetic vectors (see the module docstring), with the corpus's real
    fingerprint, so every step accepts it for this corpus."""
    from densekit.data.corpus import DocStore
    from densekit.models import load_model, model_fingerprint
    from densekit.vectors.shards import Plan
    from densekit.vectors.store import write_store

    _, _, _, _, pool, _ = sentence_pool(args)
    sent = sentence_vectors(args, pool)
    positives = json.loads((work / "positives.json").read_text())
    picks = np.load(work / "synthetic.npy", mmap_mode="r")
    docs = DocStore.open_for(work / "beir" / "corpus.jsonl", work / "cache")
    plan = Plan(model=model_fingerprint(load_model(args.model)), corpus=docs.fingerprint, count=len(docs),
                dtype="float16", shard_size=SHARD_SIZE, model_name=f"{args.model} (synthetic: normalised mean of "
                                                                     "its sentences' vectors)")
    first = np.stack([sent[rows].mean(0) for rows in positives])

    def shards():
        for start in range(0, plan.count, SHARD_SIZE):
            stop = min(plan.count, start + SHARD_SIZE)
            block = np.empty((stop - start, sent.shape[1]), dtype=np.float32)
            head = max(0, min(stop, len(positives)) - start)
            block[:head] = first[start:start + head]
            idx = np.asarray(picks[max(0, start - len(positives)):stop - len(positives)])
            if len(idx):
                mask = idx >= 0
                block[head:] = (sent[np.where(mask, idx, 0)] * mask[..., None]).sum(1)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            yield docs.id_range(start, stop), block

    store = write_store(work / "store", plan, shards(), extra={"synthetic": "mean of sentence vectors"})
    return {"store_mb": folder_mb(store.folder), "docstore_mb": folder_mb(docs.folder)}


# --- the measured steps -------------------------------------------------------------------------------------------

def step_import(args, work: Path) -> dict:
    from densekit.data.corpus import DocStore

    with Peak() as peak:
        docs = DocStore.open_for(work / "beir" / "corpus.jsonl", work / "cache")
    return peak.report(docs=len(docs))


def step_encode(args, work: Path) -> dict:
    from densekit.cli import main

    parts = -(-args.docs // args.encode_docs)
    with Peak() as peak:
        code = main(["encode", "--model", args.model, "--data", str(work / "beir"), "--output",
                     str(work / "encode-slice"), "--num-shards", str(parts), "--shard-index", "0", "--shard-size",
                     str(args.encode_docs), "--dtype", "float16", "--cache-dir", str(work / "cache")])
    assert code == 0
    shutil.rmtree(work / "encode-slice")
    return peak.report(docs_encoded=args.encode_docs, workers=parts,
                       docs_per_second=round(args.encode_docs / peak.seconds, 1))


def mine_config(args, work: Path, budget: str, retriever: str = "dense"):
    from densekit.mining.miner import MineConfig

    return MineConfig(retrievers=[retriever], sampler="random-in-window", num_negatives=4, window=(10, 100),
                      cache_dir=str(work / f"mine-{budget}"), retriever_options={retriever: {
                          "model": args.model, "corpus_embeddings": str(work / "store"), "cache_dir": None,
                          "memory_budget": budget}})


def step_mine(args, work: Path) -> dict:
    from densekit.data.beir import load_beir
    from densekit.io import atomic_write_jsonl
    from densekit.mining.miner import mine

    with Peak() as peak:
        dataset = load_beir(work / "beir", "train", stream=True, cache_dir=work / "cache")
        records = mine(dataset, mine_config(args, work, args.budget))
        atomic_write_jsonl(work / f"mined-{args.budget}.jsonl", (r.to_json() for r in records))
    return peak.report(memory_budget=args.budget, records=len(records))


def step_baseline(args, work: Path) -> dict:
    """The peer: the dense retriever as densekit had it before the store (dict corpus, one matrix, flat index)."""
    from dataclasses import dataclass

    from densekit.data.beir import load_beir
    from densekit.mining.miner import mine
    from densekit.mining.registry import RETRIEVERS
    from densekit.models import encode, load_model
    from densekit.retrieval.index import DenseIndex
    from densekit.vectors import EmbeddingStore

    @RETRIEVERS.register("dense-in-memory")
    @dataclass
    class InMemoryDense:
        model: str
        corpus_embeddings: str
        cache_dir: str | None = None
        memory_budget: str = ""
        name: str = "dense-in-memory"

        def retrieve(self, queries, corpus, k):
            matrix = EmbeddingStore.open(self.corpus_embeddings).read_all()
            index = DenseIndex.build(matrix, list(corpus), memory_budget=2 * matrix.nbytes)  # one block, as before
            q = encode(load_model(self.model), list(queries.values()), show_progress=False)
            return {qid: [(h.doc_id, h.score) for h in hits]
                    for qid, hits in zip(queries, index.search_hits(q, k), strict=True)}

    with Peak() as peak:
        dataset = load_beir(work / "beir", "train", stream=False)
        records = mine(dataset, mine_config(args, work, "baseline", "dense-in-memory"))
    return peak.report(records=len(records))


def index_params(args) -> dict:
    return {"nlist": args.nlist, "nprobe": args.nprobe, "m": 48, "fast_scan": False, "refine": "none",
            "train_size": args.nlist * 39}


def step_index(args, work: Path) -> dict:
    from densekit.retrieval.build import build_index_folder
    from densekit.vectors import EmbeddingStore, parse_bytes

    with Peak() as peak:
        store = EmbeddingStore.open(work / "store")
        build_index_folder(store, work / "index", "ivf-pq", index_params(args), on_disk=True,
                           memory_budget=parse_bytes(args.budget))
    return peak.report(memory_budget=args.budget, index_type="ivf-pq (on disk)", params=index_params(args),
                       index_mb=folder_mb(work / "index"))


def step_serve(args, work: Path) -> dict:
    from densekit.models import load_model
    from densekit.retrieval.index import DenseIndex
    from densekit.retrieval.quality import recall_at_k
    from densekit.retrieval.searcher import Searcher
    from densekit.serving.state import load_texts

    queries = [json.loads(line)["text"] for line in (work / "beir" / "queries.jsonl").read_text().splitlines()]
    with Peak() as peak:
        index = DenseIndex.load(work / "index", mmap=True)
        texts = load_texts(work / "beir", index.doc_ids, work / "cache")
        searcher = Searcher(index, load_model(args.model))
        vectors = searcher.encode_queries(queries)
        start = time.perf_counter()
        hits = searcher.search_vectors(vectors, 10)
        search_s = time.perf_counter() - start
        fetched = sum(len(texts[h.doc_id]) > 0 for found in hits for h in found)
        fetch_s = time.perf_counter() - start - search_s
    cached = next((work / f"mine-{args.budget}" / "candidates").glob("dense-*.json"))
    exact = json.loads(cached.read_text())["candidates"]
    qids = [json.loads(line)["_id"] for line in (work / "beir" / "queries.jsonl").read_text().splitlines()]
    row = {d: i for i, d in enumerate({d for q in qids for d, _ in exact[q][:10]} |
                                      {h.doc_id for found in hits for h in found})}
    recall = recall_at_k(np.array([[row[h.doc_id] for h in found] for found in hits]),
                         np.array([[row[d] for d, _ in exact[q][:10]] for q in qids]), 10)
    return peak.report(queries=len(queries), texts_fetched=fetched, recall_at_10_vs_exact=round(recall, 4),
                       search_ms_per_query=round(1000 * search_s / len(queries), 3),
                       text_fetch_ms_per_hit=round(1000 * fetch_s / max(1, fetched), 4))


STEPS = {"generate": generate, "import": step_import, "vectors": vectors, "encode": step_encode, "mine": step_mine,
         "baseline": step_baseline, "index": step_index, "serve": step_serve}


# --- driver -------------------------------------------------------------------------------------------------------

def child(args, step: str, docs: int, work: Path, budget: str | None = None) -> dict:
    out = work / f".{step}{f'-{budget}' if budget else ''}.json"
    if args.resume and out.exists():  # this step finished in an earlier run
        return json.loads(out.read_text())
    command = [sys.executable, __file__, "--step", step, "--docs", str(docs), "--work-dir", str(work), "--child-out",
               str(out), "--budget", budget or args.memory_budget]
    for name in ("data", "model", "queries", "source_docs", "seed", "cache_dir", "encode_docs", "nlist", "nprobe"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    print(f"[{docs:,} docs] {step}{f' ({budget})' if budget else ''} ...", flush=True)
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    print(f"[{docs:,} docs] {step}: {json.dumps(result)}", flush=True)
    return result


def run_size(args, docs: int) -> dict:
    work = Path(args.work_dir) / f"corpus-{docs}"
    free = shutil.disk_usage(Path(args.work_dir)).free
    if args.resume and work.exists():  # what the finished steps wrote is already on disk
        free += folder_mb(work) * 2**20
    if free < docs * BYTES_PER_DOC_NEEDED:
        return {"docs": docs, "skipped": f"needs ~{docs * BYTES_PER_DOC_NEEDED / 2**30:.0f} GiB of disk, "
                                         f"{free / 2**30:.0f} GiB free"}
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    result = {"docs": docs, "memory_budget": args.memory_budget}
    result["corpus"] = child(args, "generate", docs, work)
    result["import"] = child(args, "import", docs, work)
    result["corpus"].update(child(args, "vectors", docs, work))
    if "encode" not in args.skip_steps:
        result["encode"] = child(args, "encode", docs, work)
    result["mine"] = [child(args, "mine", docs, work, budget) for budget in args.mine_budgets]
    if docs in args.baseline_sizes:
        result["baseline"] = child(args, "baseline", docs, work)
    result["index"] = child(args, "index", docs, work)
    result["serve"] = child(args, "serve", docs, work, args.mine_budgets[0])
    result["disk_mb"] = {name: folder_mb(work / name) for name in ("beir", "cache", "store", "index")}
    if not args.keep:  # kept after a failure: --resume picks up at the step that failed
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/beir/scifact"))
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    p.add_argument("--queries", type=int, default=1000, help="SciFact queries (train + test) to mine for")
    p.add_argument("--source-docs", type=int, default=1000, help="SciFact abstracts whose sentences are recombined")
    p.add_argument("--memory-budget", default="1GB", help="--memory-budget of the index step")
    p.add_argument("--mine-budgets", nargs="+", default=["1GB"], help="the mine step runs once per budget")
    p.add_argument("--baseline-sizes", type=int, nargs="*", default=[1_000_000])
    p.add_argument("--encode-docs", type=int, default=2048, help="documents the encode step's worker encodes")
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=64)
    p.add_argument("--skip-steps", nargs="*", default=[], choices=["encode"],
                   help="steps left out (encode: its slice costs the same at every size, minutes of CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/cache", help="the sentence embeddings are cached here")
    p.add_argument("--work-dir", default="runs/bench/corpus_scale")
    p.add_argument("--keep", action="store_true", help="keep the generated corpora, stores and indexes")
    p.add_argument("--resume", action="store_true", help="reuse a size's work folder and the steps it finished")
    p.add_argument("--out", default="runs/bench/corpus_scale.json")
    p.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    p.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--budget", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.step:
        Path(args.child_out).write_text(json.dumps(STEPS[args.step](args, Path(args.work_dir))))
        return
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "corpus_scale", "model": args.model, "cpu_count": os.cpu_count(), "sizes": []}
    for docs in args.sizes:
        report["sizes"].append(run_size(args, docs))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
