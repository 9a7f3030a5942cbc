"""Evaluate a model or a saved index on a BEIR dataset: a run, its metrics, and the files people use."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from densekit.data.beir import BeirDataset
from densekit.encoders import EncoderOptions
from densekit.evaluation.metrics import Run, evaluate_run, write_trec_run
from densekit.io import atomic_write_json
from densekit.retrieval.exhaustive import ExactScan
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.searcher import Searcher
from densekit.vectors import VectorSource, corpus_vectors
from densekit.vectors.options import ScaleOptions

logger = logging.getLogger(__name__)


def corpus_searcher(model, dataset: BeirDataset, batch_size: int = 64, bf16: bool = False,
                    cache_dir: str | Path | None = None,
                    scale: ScaleOptions | None = None) -> tuple[Searcher, VectorSource]:
    """Exact search over the dataset's corpus encoded by ``model`` (its embedding store, streamed within the memory
    budget), and the corpus vectors."""
    scale = scale or ScaleOptions()
    vectors = corpus_vectors(model, dataset.corpus, cache_dir, batch_size=batch_size, bf16=bf16, dtype=scale.dtype,
                             shard_size=scale.shard_size)
    return Searcher(ExactScan(vectors, scale.budget_bytes), model, batch_size=batch_size, bf16=bf16), vectors


def dense_run(model, dataset: BeirDataset, k: int = 100, batch_size: int = 64, bf16: bool = False,
              cache_dir: str | Path | None = None) -> Run:
    """Retrieve the top ``k`` documents for every query that has judgments in the split."""
    searcher, _ = corpus_searcher(model, dataset, batch_size, bf16, cache_dir)
    return searcher_run(searcher, dataset, k)[0]


def _index_embeddings(index: DenseIndex):
    """The stored vectors of a saved index when faiss can give them back (flat indexes), else None."""
    try:
        return index.index.reconstruct_n(0, index.index.ntotal)
    except RuntimeError:
        return None


def searcher_run(searcher: Searcher, dataset: BeirDataset, k: int = 100, auc_negatives: int | None = None,
                 doc_emb: np.ndarray | VectorSource | None = None):
    """(run, AUC score samples or ``None`` when ``auc_negatives`` is) for the split's judged queries."""
    from densekit.evaluation.auc import sample_scores, samples_from_run

    queries = dataset.split_queries() if dataset.qrels else dataset.queries
    qids = list(queries)
    q_emb = searcher.encode_queries([queries[q] for q in qids], show_progress=True)
    hits = searcher.search_vectors(q_emb, k)
    run = {qid: {h.doc_id: h.score for h in found} for qid, found in zip(qids, hits, strict=True)}
    if auc_negatives is None:
        return run, None
    if doc_emb is None:
        doc_emb = _index_embeddings(searcher.index)
    if doc_emb is None:
        logger.warning("the index cannot return its vectors; AUC covers the retrieved top-%d only", k)
        return run, samples_from_run(run, dataset.qrels)
    if not isinstance(doc_emb, np.ndarray):  # the AUC scores every query against every document
        doc_emb = doc_emb.read_all()
    return run, sample_scores(q_emb, doc_emb, qids, searcher.index.doc_ids, dataset.qrels,
                              negatives_per_query=auc_negatives)


def evaluate_and_write(run: Run, dataset: BeirDataset, output_dir: str | Path, info: dict) -> dict:
    """Write ``metrics.json`` (flat keys such as ``ndcg_at_10``) and ``run.trec`` into ``output_dir``."""
    output_dir = Path(output_dir)
    metrics = evaluate_run(dataset.qrels, run)
    result = {**{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
              **info, "dataset": str(dataset.path), "split": dataset.split}
    # a TREC run line has 6 whitespace-separated columns, so the tag must not contain whitespace
    tag = "_".join((Path(str(info.get("model", "densekit"))).name or "densekit").split())
    write_trec_run(run, output_dir / "run.trec", tag=tag)
    atomic_write_json(output_dir / "metrics.json", result)
    return result


def write_auc_outputs(samples, output_dir: str | Path, label: str | None = None) -> dict:
    """``scores.npz``, ``auc.json`` (global and per-query ROC AUC), ``roc.png`` and ``score_hist.png``."""
    from densekit.evaluation.auc import auc_summary
    from densekit.evaluation.report import plot_roc, plot_score_histograms

    output_dir = Path(output_dir)
    samples.save(output_dir / "scores.npz")
    summary = auc_summary(samples)
    atomic_write_json(output_dir / "auc.json", summary)
    label = label or output_dir.name
    plot_roc({label: samples}, output_dir / "roc.png")
    plot_score_histograms({label: samples}, output_dir / "score_hist.png")
    return summary


def evaluate_model(model_name: str | None, dataset: BeirDataset, output_dir: str | Path, k: int = 100,
                   index_dir: str | Path | None = None, encoder: EncoderOptions | None = None,
                   auc: bool = False, auc_negatives: int = 1000, scale: ScaleOptions | None = None) -> dict:
    """Write metrics.json + run.trec; with ``auc`` also the files of :func:`write_auc_outputs`.

    With ``index_dir`` the saved index is searched with ``model_name`` (default: the model it records),
    otherwise the corpus is encoded with ``model_name`` (into the embedding store in ``encoder.cache``) and searched
    exactly, streamed within ``scale``'s memory budget."""
    encoder = encoder or EncoderOptions()
    start = time.perf_counter()
    doc_emb = None
    if index_dir:
        searcher = Searcher.from_index(index_dir, model_name, encoder)
        model_name = model_name or searcher.index.query_model
    else:
        searcher, doc_emb = corpus_searcher(encoder.load(model_name), dataset, encoder.batch_size, encoder.bf16,
                                            encoder.cache, scale)
    run, samples = searcher_run(searcher, dataset, k, auc_negatives if auc else None, doc_emb)
    info = {"model": model_name, "index": str(index_dir) if index_dir else None, "k": k, "bf16": encoder.bf16,
            "seconds": round(time.perf_counter() - start, 1)}
    result = evaluate_and_write(run, dataset, output_dir, info)
    if samples is not None:
        summary = write_auc_outputs(samples, output_dir)
        result = {**result, **{key: value for key, value in summary.items() if key != "per_query_auc"}}
    return result
