"""ROC AUC diagnostics, their files, and the --compare report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from densekit.errors import DataError
from densekit.evaluation.auc import (
    ScoreSamples,
    auc_summary,
    roc_auc,
    roc_curve,
    sample_scores,
    samples_from_run,
)

sys.path.insert(0, str(Path(__file__).parent))
from helpers import write_beir  # noqa: E402
from test_eval_mteb import TOY_CORPUS, TOY_QRELS, TOY_QUERIES  # noqa: E402


@pytest.fixture
def toy_beir(tmp_path):
    return write_beir(tmp_path / "toy", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})


def test_roc_auc_is_the_mann_whitney_statistic():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50).round(1), rng.normal(0, 1, 80).round(1)  # rounded: ties
    expected = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(np.array([3.0, 2.0]), np.array([1.0, 0.0])) == 1.0
    assert roc_auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert np.isnan(roc_auc(np.array([]), np.array([1.0])))


def test_roc_curve_area_equals_auc():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 70).round(1)
    fpr, tpr = roc_curve(pos, neg)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(pos, neg), abs=1e-12)


def test_global_and_per_query_auc_differ_when_scales_differ():
    # each query ranks perfectly, but query b's scores sit on a higher scale: per-query AUC 1, global AUC < 1
    samples = ScoreSamples(["a", "b", "none"], [np.array([0.5]), np.array([0.9]), np.array([])],
                           [np.array([0.1, 0.2]), np.array([0.6, 0.7]), np.array([0.3])])
    summary = auc_summary(samples)
    assert summary["mean_per_query_auc"] == 1.0
    assert summary["global_auc"] == pytest.approx(roc_auc(np.array([0.5, 0.9]), np.array([0.1, 0.2, 0.6, 0.7,
                                                                                          0.3])))
    assert summary["global_auc"] < 1.0
    assert summary["queries_without_auc"] == 1 and summary["per_query_auc"]["none"] is None


def test_sample_scores_uses_every_doc_of_a_small_corpus_and_saves_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    q_emb, d_emb = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(10, 4)).astype(np.float32)
    doc_ids = [f"d{i}" for i in range(10)]
    qrels = {"q0": {"d1": 1, "d2": 0}, "q1": {"d3": 2}, "q2": {"d4": 0}}
    samples = sample_scores(q_emb, d_emb, ["q0", "q1", "q2"], doc_ids, qrels, negatives_per_query=100)
    assert [len(p) for p in samples.positives] == [1, 1, 0]
    assert [len(n) for n in samples.negatives] == [9, 9, 10]  # judged-0 documents count as non-relevant
    assert samples.positives[0][0] == pytest.approx(q_emb[0] @ d_emb[1], rel=1e-6)
    small = sample_scores(q_emb, d_emb, ["q0"], doc_ids, qrels, negatives_per_query=4)
    assert len(small.negatives[0]) == 4
    samples.save(tmp_path / "scores.npz")
    loaded = ScoreSamples.load(tmp_path / "scores.npz")
    assert loaded.query_ids == samples.query_ids and loaded.source == samples.source
    for a, b in zip(loaded.negatives, samples.negatives, strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        ScoreSamples.load(tmp_path / "bad.npz")


def test_samples_from_run_splits_retrieved_docs_by_judgment():
    run = {"q1": {"d1": 0.9, "d2": 0.5, "d4": 0.4}, "q3": {"d3": 0.7}}
    samples = samples_from_run(run, TOY_QRELS)
    assert samples.query_ids == ["q1", "q3"] and samples.source == "run top-k"
    assert sorted(samples.positives[0].tolist()) == pytest.approx([0.4, 0.9])
    assert samples.negatives[0].tolist() == pytest.approx([0.5])
    assert len(samples.positives[1]) == 0  # all judgments 0: no per-query AUC


def _eval(tmp_path, name, model, data, extra=()):
    from densekit.cli import main

    out = tmp_path / name
    code = main(["eval", "--model", model, "--data", str(data), "--output", str(out), "--cache-dir", "none",
                 "--auc", *extra])
    assert code == 0
    return out


def test_eval_auc_files_and_compare_report(tmp_path, toy_beir, tiny_model_dir, minilm_path):
    from PIL import Image

    tiny = _eval(tmp_path, "tiny", tiny_model_dir, toy_beir)
    minilm = _eval(tmp_path, "minilm", minilm_path, toy_beir)
    metrics = json.loads((tiny / "metrics.json").read_text())
    assert {"ndcg_at_10", "mrr_at_10", "recall_at_100", "map", "num_queries"} <= set(metrics)
    auc = json.loads((tiny / "auc.json").read_text())
    assert auc["queries_with_auc"] == 2 and auc["queries_without_auc"] == 1  # q3: judgments all 0
    assert 0.0 <= auc["global_auc"] <= 1.0
    for png in ("roc.png", "score_hist.png"):
        with Image.open(tiny / png) as image:
            assert image.format == "PNG" and image.width > 300

    from densekit.cli import main

    report = tmp_path / "report"
    assert main(["eval", "--output", str(report), "--compare", str(tiny), str(minilm)]) == 0
    md = (report / "report.md").read_text()
    assert "| tiny |" in md and "| minilm |" in md and "![ROC curves" in md
    minilm_ndcg = json.loads((minilm / "metrics.json").read_text())["ndcg_at_10"]
    assert f"{minilm_ndcg:.4f} ({minilm_ndcg - metrics['ndcg_at_10']:+.4f})" in md
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # ROC, histograms, per-query delta, all embedded
    summary = json.loads((report / "report.json").read_text())
    assert sum(summary["per_query_changes"]["minilm"].values()) == 3


def test_compare_reads_runs_without_scores_file(tmp_path, toy_beir):
    """A run folder with only metrics.json + run.trec (e.g. BM25) still gets top-k AUC and plots."""
    from densekit.data.beir import load_beir
    from densekit.evaluation.beir import evaluate_and_write
    from densekit.evaluation.report import render_compare

    dataset = load_beir(toy_beir, "test")
    run_a = {"q1": {"d1": 2.0, "d2": 1.0, "d4": 0.5}, "q2": {"d2": 3.0, "d1": 1.0}, "q3": {"d3": 1.0}}
    run_b = {"q1": {"d4": 2.0, "d1": 1.5, "d2": 1.0}, "q2": {"d1": 3.0, "d2": 1.0}, "q3": {"d3": 1.0}}
    evaluate_and_write(run_a, dataset, tmp_path / "a", {"model": "bm25"})
    evaluate_and_write(run_b, dataset, tmp_path / "b", {"model": "other"})
    summary = render_compare([tmp_path / "a", tmp_path / "b"], tmp_path / "r", labels=["A", "B"])
    assert summary["per_query_changes"]["B"] == {"better": 1, "worse": 1, "same": 1}
    assert "top-k" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(DataError, match="no metrics.json"):
        render_compare([tmp_path / "r"], tmp_path / "r2")
