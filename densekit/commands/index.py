"""densekit index: encode a corpus (or take its embedding store) into a FAISS index saved with its document ids and
model; ``--on-disk`` keeps IVF lists in a memory-mapped file, ``--parts N`` builds N indexes served as one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option
from densekit.vectors.options import ScaleOptions

NAME = "index"
HELP = "encode a BEIR corpus with a model into a FAISS index folder"


@dataclass
class IndexOptions:
    """index"""

    model: str = option(help="hub name or local sentence-transformers folder")
    data: str = option(help="BEIR folder or name (its corpus is indexed)")
    output: str = option(help="index folder to write")
    index_type: str = option("flat", flag="--type", help="index type: flat, ivf-flat, ivf-pq, hnsw "
                                                         "(or another registered name)")
    params: dict[str, Any] = option(default_factory=dict, flag="--param",
                                    help="index type parameter, repeatable: e.g. nlist=256, nprobe=32, m=32, "
                                         "ef_search=128, refine=sq8")
    report_queries: int = option(200, help="queries sampled for the build report (recall@10 vs exact search); "
                                           "0 skips it")
    embeddings: str | None = option(None, help="embedding store to index (written by densekit encode) instead of "
                                               "the cached one (encoded if missing)")
    on_disk: bool = option(False, help="IVF types: fill the lists shard by shard and merge them into index.ivfdata "
                                       "(faiss merge_ondisk), served memory-mapped; RAM holds one block")
    parts: int = option(1, help="build this many indexes over consecutive row ranges, served as one "
                                "faiss.IndexShards (parallel search; each part can live on its own disk)")

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise ConfigError(f"--parts must be at least 1, got {self.parts}")


OPTIONS = (IndexOptions, EncoderOptions, ScaleOptions)


def build_report(index, vectors, query_embeddings, source: str, memory_budget: int,
                 memory_bytes: int | None = None) -> dict:
    from densekit.retrieval.exhaustive import ExactScan
    from densekit.retrieval.quality import quality_report

    exact = ExactScan(vectors, memory_budget).search(query_embeddings, 10)[1]
    report = quality_report(index.index, vectors, query_embeddings, k=10, exact_rows=exact,
                            memory_bytes=memory_bytes)
    report["report_query_source"] = source
    report["build_seconds"] = index.meta["build_seconds"]
    return report


def report_queries(dataset, model, vectors, count: int, batch_size: int):
    """A seeded sample of the dataset's queries, encoded; corpus vectors when it has none."""
    from densekit.models import encode
    from densekit.retrieval.quality import sample_rows

    qids = sorted(dataset.queries)
    if qids:
        rows = sample_rows(len(qids), count)
        texts = [dataset.queries[qids[r]] for r in rows]
        return encode(model, texts, batch_size=batch_size, show_progress=False), "dataset queries"
    return vectors.take(sample_rows(vectors.count, count)), "corpus vectors"


def index_vectors(opts: IndexOptions, encoder: EncoderOptions, scale: ScaleOptions, dataset, model):
    """The store given with --embeddings (checked against the corpus and the model), or the cached one."""
    from densekit.data.corpus import corpus_fingerprint
    from densekit.models import model_fingerprint
    from densekit.retrieval.searcher import model_dim
    from densekit.vectors import EmbeddingStore, corpus_vectors

    if opts.embeddings:
        return EmbeddingStore.open(opts.embeddings, model=model_fingerprint(model),
                                   corpus=corpus_fingerprint(dataset.corpus), dim=model_dim(model))
    return corpus_vectors(model, dataset.corpus, encoder.cache, batch_size=encoder.batch_size, bf16=encoder.bf16,
                          dtype=scale.dtype, shard_size=scale.shard_size)


def run(opts: IndexOptions, encoder: EncoderOptions, scale: ScaleOptions) -> int:
    from pathlib import Path

    from densekit.data.beir import load_beir
    from densekit.io import atomic_write_json, ensure_writable
    from densekit.models import describe_model
    from densekit.retrieval.build import build_index_folder, folder_bytes
    from densekit.retrieval.index import DenseIndex

    ensure_writable(Path(opts.output).parent)  # fail now, not after encoding
    dataset = load_beir(opts.data, split=None, stream=scale.stream, cache_dir=encoder.cache)
    model = encoder.load(opts.model)
    vectors = index_vectors(opts, encoder, scale, dataset, model)
    meta = {**describe_model(opts.model), "max_seq_length": model.max_seq_length, "bf16": encoder.bf16,
            "corpus": str(Path(dataset.path).resolve())}  # absolute: the server may run from another folder
    in_folder = opts.on_disk or opts.parts > 1
    if in_folder:
        index = build_index_folder(vectors, opts.output, opts.index_type, opts.params, meta, on_disk=opts.on_disk,
                                   parts=opts.parts, memory_budget=scale.budget_bytes)
    else:
        index = DenseIndex.build(vectors, None, opts.index_type, opts.params, meta, memory_budget=scale.budget_bytes)
    if opts.report_queries > 0:
        queries, source = report_queries(dataset, model, vectors, opts.report_queries, encoder.batch_size)
        index.meta["report"] = build_report(index, vectors, queries, source, scale.budget_bytes,
                                            folder_bytes(opts.output) if opts.on_disk else None)
    if in_folder:
        atomic_write_json(Path(opts.output) / "meta.json", index.meta)
    else:
        index.save(opts.output)
    print(f"indexed {vectors.count} documents into {opts.output} ({opts.index_type}"
          f"{', lists on disk' if opts.on_disk else ''}{f', {opts.parts} parts' if opts.parts > 1 else ''}, "
          f"search params {index.meta['search_params'] or 'none'})")
    report = index.meta.get("report")
    if report:
        print(f"build report: recall@10 vs exact {report['recall_at_10']:.4f} on {report['report_queries']} "
              f"{report['report_query_source']}, memory {report['memory_bytes'] / 2**20:.1f} MiB "
              f"{'(on disk, memory-mapped) ' if opts.on_disk else ''}"
              f"(flat {report['flat_memory_bytes'] / 2**20:.1f} MiB), build {report['build_seconds']:.1f} s, "
              f"search {report['search_ms_per_query']:.3f} ms/query")
        if report["recall_at_10"] < 0.95 and opts.index_type != "flat":
            print("warning: recall@10 is below 0.95; raise nprobe (IVF) or ef_search (HNSW) with --param")
    return 0
