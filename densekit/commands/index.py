"""densekit index: encode a corpus into a FAISS index saved with its document ids and model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from densekit.encoders import EncoderOptions
from densekit.options import option

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


OPTIONS = (IndexOptions, EncoderOptions)


def build_report(index, embeddings, query_embeddings, source: str) -> dict:
    from densekit.retrieval.quality import quality_report

    report = quality_report(index.index, embeddings, query_embeddings, k=10)
    report["report_query_source"] = source
    report["build_seconds"] = index.meta["build_seconds"]
    return report


def report_queries(dataset, model, embeddings, count: int, batch_size: int):
    """A seeded sample of the dataset's queries, encoded; corpus vectors when it has none."""
    from densekit.models import encode
    from densekit.retrieval.quality import sample_rows

    qids = sorted(dataset.queries)
    if qids:
        rows = sample_rows(len(qids), count)
        texts = [dataset.queries[qids[r]] for r in rows]
        return encode(model, texts, batch_size=batch_size, show_progress=False), "dataset queries"
    return embeddings[sample_rows(len(embeddings), count)], "corpus vectors"


def run(opts: IndexOptions, encoder: EncoderOptions) -> int:
    from pathlib import Path

    from densekit.data.beir import doc_text, load_beir
    from densekit.embeddings import encode_cached
    from densekit.io import ensure_writable
    from densekit.models import describe_model
    from densekit.retrieval.index import DenseIndex

    ensure_writable(Path(opts.output).parent)  # fail now, not after encoding
    dataset = load_beir(opts.data, split=None)
    model = encoder.load(opts.model)
    doc_ids = list(dataset.corpus)
    emb = encode_cached(model, [doc_text(dataset.corpus[d]) for d in doc_ids], encoder.cache,
                        batch_size=encoder.batch_size, bf16=encoder.bf16, desc="encode corpus")
    meta = {**describe_model(opts.model), "max_seq_length": model.max_seq_length, "bf16": encoder.bf16,
            "corpus": str(Path(dataset.path).resolve())}  # absolute: the server may run from another folder
    index = DenseIndex.build(emb, doc_ids, opts.index_type, opts.params, meta)
    if opts.report_queries > 0:
        queries, source = report_queries(dataset, model, emb, opts.report_queries, encoder.batch_size)
        index.meta["report"] = build_report(index, emb, queries, source)
    index.save(opts.output)
    print(f"indexed {len(doc_ids)} documents into {opts.output} ({opts.index_type}, "
          f"search params {index.meta['search_params'] or 'none'})")
    report = index.meta.get("report")
    if report:
        print(f"build report: recall@10 vs exact {report['recall_at_10']:.4f} on {report['report_queries']} "
              f"{report['report_query_source']}, memory {report['memory_bytes'] / 2**20:.1f} MiB "
              f"(flat {report['flat_memory_bytes'] / 2**20:.1f} MiB), build {report['build_seconds']:.1f} s, "
              f"search {report['search_ms_per_query']:.3f} ms/query")
        if report["recall_at_10"] < 0.95 and opts.index_type != "flat":
            print("warning: recall@10 is below 0.95; raise nprobe (IVF) or ef_search (HNSW) with --param")
    return 0
