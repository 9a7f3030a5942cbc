"""Evaluate a model or a saved index on a BEIR dataset: a run, its metrics, and the files people use."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from densekit.data.beir import BeirDataset, doc_text
from densekit.embeddings import encode_cached
from densekit.evaluation.metrics import Run, evaluate_run, write_trec_run
from densekit.io import atomic_write_json
from densekit.models import encode
from densekit.retrieval.index import DenseIndex

logger = logging.getLogger(__name__)


def dense_run(model, dataset: BeirDataset, k: int = 100, index: DenseIndex | None = None,
              batch_size: int = 64, bf16: bool = False, cache_dir: str | Path | None = None) -> Run:
    """Retrieve the top ``k`` documents for every query that has judgments in the split."""
    return dense_run_with_scores(model, dataset, k, index, batch_size, bf16, cache_dir, auc_negatives=None)[0]


def _index_embeddings(index: DenseIndex):
    """The stored vectors of a saved index when faiss can give them back (flat indexes), else None."""
    try:
        return index.index.reconstruct_n(0, index.index.ntotal)
    except RuntimeError:
        return None


def dense_run_with_scores(model, dataset: BeirDataset, k: int = 100, index: DenseIndex | None = None,
                          batch_size: int = 64, bf16: bool = False, cache_dir: str | Path | None = None,
                          auc_negatives: int | None = 1000):
    """:func:`dense_run`, plus the score samples AUC diagnostics need (``None`` when ``auc_negatives`` is)."""
    from densekit.evaluation.auc import sample_scores, samples_from_run

    queries = dataset.split_queries() if dataset.qrels else dataset.queries
    doc_emb = None
    if index is None:
        doc_ids = list(dataset.corpus)
        doc_emb = encode_cached(model, [doc_text(dataset.corpus[d]) for d in doc_ids], cache_dir,
                                batch_size=batch_size, bf16=bf16, desc="encode corpus")
        index = DenseIndex.build(doc_emb, doc_ids)
    elif auc_negatives is not None:
        doc_emb = _index_embeddings(index)
    qids = list(queries)
    q_emb = encode(model, [queries[q] for q in qids], batch_size=batch_size, bf16=bf16)
    hits = index.search_ids(q_emb, k)
    run = {qid: dict(h) for qid, h in zip(qids, hits, strict=True)}
    if auc_negatives is None:
        return run, None
    if doc_emb is None:
        logger.warning("the index cannot return its vectors; AUC covers the retrieved top-%d only", k)
        return run, samples_from_run(run, dataset.qrels)
    return run, sample_scores(q_emb, doc_emb, qids, index.doc_ids, dataset.qrels,
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


def evaluate_model(model_name: str, dataset: BeirDataset, output_dir: str | Path, k: int = 100,
                   index_dir: str | Path | None = None, batch_size: int = 64, bf16: bool = False,
                   cache_dir: str | Path | None = None, max_seq_length: int | None = None,
                   auc: bool = False, auc_negatives: int = 1000) -> dict:
    """Write metrics.json + run.trec; with ``auc`` also the files of :func:`write_auc_outputs`."""
    from densekit.models import load_model

    start = time.perf_counter()
    index = DenseIndex.load(index_dir) if index_dir else None
    if index is not None and model_name is None:
        model_name = index.meta.get("resolved") or index.meta.get("model")
    if index is not None and max_seq_length is None:
        max_seq_length = index.meta.get("max_seq_length")
    model = load_model(model_name, max_seq_length=max_seq_length)
    run, samples = dense_run_with_scores(model, dataset, k=k, index=index, batch_size=batch_size, bf16=bf16,
                                         cache_dir=cache_dir, auc_negatives=auc_negatives if auc else None)
    info = {"model": model_name, "index": str(index_dir) if index_dir else None, "k": k, "bf16": bf16,
            "seconds": round(time.perf_counter() - start, 1)}
    result = evaluate_and_write(run, dataset, output_dir, info)
    if samples is not None:
        summary = write_auc_outputs(samples, output_dir)
        result = {**result, **{key: value for key, value in summary.items() if key != "per_query_auc"}}
    return result
