"""densekit index: encode a corpus into a FAISS index saved with its document ids and model."""

from __future__ import annotations

from densekit.commands._common import add_encoding_arguments, cache_dir, parse_key_values

NAME = "index"
HELP = "encode a BEIR corpus with a model into a FAISS index folder"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="hub name or local sentence-transformers folder")
    p.add_argument("--data", required=True, help="BEIR folder or name (its corpus is indexed)")
    p.add_argument("--output", required=True, help="index folder to write")
    p.add_argument("--type", default="flat", dest="index_type",
                   help="index type: flat, ivf-flat, ivf-pq, hnsw (or another registered name)")
    p.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                   help="index type parameter, e.g. nlist=256, nprobe=32, m=32, ef_search=128, refine=sq8")
    p.add_argument("--report-queries", type=int, default=200,
                   help="queries sampled for the build report (recall@10 vs exact search); 0 skips it")
    add_encoding_arguments(p)


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


def run(args) -> int:
    from pathlib import Path

    from densekit.data.beir import doc_text, load_beir
    from densekit.embeddings import encode_cached
    from densekit.models import describe_model, load_model
    from densekit.retrieval.index import DenseIndex

    dataset = load_beir(args.data, split=None)
    model = load_model(args.model, max_seq_length=args.max_seq_length)
    doc_ids = list(dataset.corpus)
    emb = encode_cached(model, [doc_text(dataset.corpus[d]) for d in doc_ids], cache_dir(args),
                        batch_size=args.batch_size, bf16=args.bf16, desc="encode corpus")
    meta = {**describe_model(args.model), "max_seq_length": model.max_seq_length, "bf16": args.bf16,
            "corpus": str(Path(dataset.path).resolve())}  # absolute: the server may run from another folder
    index = DenseIndex.build(emb, doc_ids, args.index_type, parse_key_values(args.param, "--param"), meta)
    if args.report_queries > 0:
        queries, source = report_queries(dataset, model, emb, args.report_queries, args.batch_size)
        index.meta["report"] = build_report(index, emb, queries, source)
    index.save(args.output)
    print(f"indexed {len(doc_ids)} documents into {args.output} ({args.index_type}, "
          f"search params {index.meta['search_params'] or 'none'})")
    report = index.meta.get("report")
    if report:
        print(f"build report: recall@10 vs exact {report['recall_at_10']:.4f} on {report['report_queries']} "
              f"{report['report_query_source']}, memory {report['memory_bytes'] / 2**20:.1f} MiB "
              f"(flat {report['flat_memory_bytes'] / 2**20:.1f} MiB), build {report['build_seconds']:.1f} s, "
              f"search {report['search_ms_per_query']:.3f} ms/query")
        if report["recall_at_10"] < 0.95 and args.index_type != "flat":
            print("warning: recall@10 is below 0.95; raise nprobe (IVF) or ef_search (HNSW) with --param")
    return 0
