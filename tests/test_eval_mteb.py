"""densekit's BEIR evaluator equals pytrec_eval's and mteb's; local folders run as MTEB tasks."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from densekit.errors import ConfigError, DataError, DensekitError
from densekit.evaluation.metrics import evaluate_run

sys.path.insert(0, str(Path(__file__).parent))
from helpers import scifact_subset, write_beir  # noqa: E402


def _random_run_and_qrels(seed: int = 0):
    """Runs with tied scores, graded judgments, a query whose judgments are all 0, and one with no hits."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        judged = rng.sample(docs, 6)
        qrels[qid] = {d: rng.choice([0, 1, 2]) for d in judged}
        run[qid] = {d: round(rng.random(), 1) for d in rng.sample(docs, 40)}  # 1 decimal: many ties
    qrels["q_zero"] = {"d1": 0, "d2": 0}
    run["q_zero"] = {d: rng.random() for d in docs[:30]}
    qrels["q_miss"] = {"d59": 1}
    run["q_miss"] = {d: rng.random() for d in docs[:30]}
    return qrels, run


def test_same_run_gives_the_same_metrics_as_pytrec_eval_and_mteb():
    import pytrec_eval
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    qrels, run = _random_run_and_qrels()
    ks = (1, 3, 5, 10, 100)
    ours = evaluate_run(qrels, run, ks=ks, per_query=True)
    cut = ",".join(map(str, ks))
    measures = {"map", "recip_rank", f"ndcg_cut.{cut}", f"recall.{cut}", f"P.{cut}", f"map_cut.{cut}"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    assert set(trec) == set(ours["per_query"]) and "q_zero" in trec
    for qid, theirs in trec.items():
        mine = ours["per_query"][qid]
        assert mine["map"] == pytest.approx(theirs["map"], abs=1e-12)
        assert mine["mrr"] == pytest.approx(theirs["recip_rank"], abs=1e-12)
        for k in ks:
            assert mine[f"ndcg_at_{k}"] == pytest.approx(theirs[f"ndcg_cut_{k}"], abs=1e-12), (qid, k)
            assert mine[f"recall_at_{k}"] == pytest.approx(theirs[f"recall_{k}"], abs=1e-12), (qid, k)
            assert mine[f"precision_at_{k}"] == pytest.approx(theirs[f"P_{k}"], abs=1e-12), (qid, k)
            assert mine[f"map_at_{k}"] == pytest.approx(theirs[f"map_cut_{k}"], abs=1e-12), (qid, k)

    result = calculate_retrieval_scores(run, qrels, ks)  # mteb's own scorer (rounds means to 5 decimals)
    for k in ks:
        assert ours[f"ndcg_at_{k}"] == pytest.approx(result.ndcg[f"NDCG@{k}"], abs=5e-6)
        assert ours[f"recall_at_{k}"] == pytest.approx(result.recall[f"Recall@{k}"], abs=5e-6)
        assert ours[f"map_at_{k}"] == pytest.approx(result.map[f"MAP@{k}"], abs=5e-6)
        assert ours[f"precision_at_{k}"] == pytest.approx(result.precision[f"P@{k}"], abs=5e-6)
        assert ours[f"mrr_at_{k}"] == pytest.approx(result.mrr[f"MRR@{k}"], abs=1e-12)  # not rounded by mteb
    # the all-zero query is averaged in with 0 by all three
    assert ours["per_query"]["q_zero"]["ndcg_at_10"] == 0.0 and ours["num_queries"] == len(qrels)


TOY_CORPUS = {"d1": {"title": "Cats", "text": "The cat sat on the mat and purred."},
              "d2": {"title": "", "text": "Black holes bend light through gravity."},
              "d3": {"title": "Dogs", "text": "Dogs like to run in the park."},
              "d4": {"title": "", "text": "Kittens and cats purr when they are happy."},
              "d5": {"title": "Finance", "text": "Interest rates rose again this quarter."}}
TOY_QUERIES = {"q1": "why do cats purr", "q2": "gravity and light", "q3": "a query with nothing relevant"}
TOY_QRELS = {"q1": {"d1": 1, "d4": 2}, "q2": {"d2": 1}, "q3": {"d3": 0, "d5": 0}}


@pytest.fixture
def toy_beir(tmp_path):
    return write_beir(tmp_path / "toy", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS}, gz=True)


def test_local_beir_folder_runs_as_mteb_task_and_matches_densekit(toy_beir, tmp_path, tiny_model_dir):
    """The query whose judgments are all 0 is kept (scored 0) by mteb and by densekit alike."""
    from densekit.data.beir import load_beir
    from densekit.evaluation.beir import dense_run
    from densekit.evaluation.mteb_run import MtebArgs, run_mteb
    from densekit.models import load_model

    model = load_model(tiny_model_dir)
    out = tmp_path / "out"
    summary = run_mteb(MtebArgs(model=tiny_model_dir, tasks=[str(toy_beir)], output=str(out)), model=model)
    task = summary["tasks"]["toy"]
    scores = task["test"]["scores"]
    result_file = out / "results" / "local__st" / summary["mteb_revision"] / "toy.json"
    assert task["result_file"] == str(result_file) and result_file.exists()
    on_disk = json.loads(result_file.read_text())
    assert on_disk["task_name"] == "toy"
    assert on_disk["scores"]["test"][0]["ndcg_at_10"] == scores["ndcg_at_10"]
    assert (out / "mteb_summary.json").exists()

    ours = evaluate_run(TOY_QRELS, dense_run(model, load_beir(toy_beir, "test"), k=100))
    assert ours["num_queries"] == 3
    for key in ("ndcg_at_10", "map_at_10", "recall_at_100", "precision_at_1", "mrr_at_10"):
        assert ours[key] == pytest.approx(scores[key], abs=5e-6), key
    # with q3 (no relevant document) averaged in as 0, nDCG@10 can be at most 2/3
    assert scores["ndcg_at_10"] <= 2 / 3 + 1e-6


def test_local_sts_folder_runs_as_mteb_task_and_matches_densekit(tmp_path, tiny_model_dir):
    from densekit.evaluation.mteb_run import MtebArgs, run_mteb
    from densekit.evaluation.sts import evaluate_sts
    from densekit.models import load_model

    year = tmp_path / "sts" / "semeval_raw" / "STS15"
    year.mkdir(parents=True)
    pairs = [("a dog runs", "a dog is running", "4.8"), ("red apple", "quantum physics", "0.0"),
             ("a cat sleeps", "a kitten naps", "3.9"), ("stocks fell", "markets dropped", "4.1"),
             ("he sings", "the car is blue", "0.4"), ("skip me", "unscored", "")]
    (year / "STS.input.demo.txt").write_text("\n".join(f"{a}\t{b}" for a, b, _ in pairs) + "\n")
    (year / "STS.gs.demo.txt").write_text("\n".join(s for _, _, s in pairs) + "\n")
    model = load_model(tiny_model_dir)
    args = MtebArgs(model=tiny_model_dir, tasks=[str(year)], output=str(tmp_path / "out"))
    summary = run_mteb(args, model=model)
    mteb_spearman = summary["tasks"]["STS15"]["test"]["scores"]["cosine_spearman"] * 100
    ours = evaluate_sts(model, ["STS15"], data_dir=tmp_path)["STS15"]
    assert ours == pytest.approx(mteb_spearman, abs=1e-4)


def test_unknown_task_name_is_a_clear_error():
    from densekit.evaluation.mteb_tasks import resolve_task

    with pytest.raises(ConfigError, match="unknown MTEB task 'NoSuchTaskXYZ'"):
        resolve_task("NoSuchTaskXYZ")
    with pytest.raises(DataError, match="task folder not found"):
        resolve_task("./no/such/folder")


def test_folder_that_is_neither_beir_nor_sts(tmp_path):
    from densekit.evaluation.mteb_tasks import resolve_task

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="neither a BEIR folder"):
        resolve_task(str(tmp_path))


def test_builtin_task_without_cached_data_fails_fast(monkeypatch, tmp_path):
    """Offline, a built-in task whose data is neither in the HF cache nor local fails without any network try."""
    import socket

    import datasets

    from densekit.evaluation.mteb_tasks import resolve_task

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(datasets, "load_dataset", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DENSEKIT_DATA", str(tmp_path))  # no local copies here
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DensekitError, match="NFCorpus.*mteb/nfcorpus.*not in the local cache"):
        resolve_task("NFCorpus", data_dir=tmp_path)


def test_builtin_task_with_cached_hub_data_uses_mteb_own_loader(monkeypatch, tmp_path):
    import huggingface_hub.constants
    import mteb

    from densekit.evaluation.mteb_tasks import resolve_task

    dataset = mteb.get_task("NFCorpus").metadata.dataset
    snapshot = tmp_path / f"datasets--{dataset['path'].replace('/', '--')}" / "snapshots" / dataset["revision"]
    snapshot.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = resolve_task("NFCorpus")
    assert type(task).__name__ == "NFCorpus" and not hasattr(task, "local_folder")


def test_builtin_name_uses_local_copy_with_builtin_metadata(scifact_dir):
    from densekit.evaluation.mteb_tasks import resolve_task

    task = resolve_task("SciFact", data_dir=scifact_dir.parents[1])
    assert task.metadata.name == "SciFact" and task.metadata.main_score == "ndcg_at_10"
    assert task.local_folder == scifact_dir.resolve()
    sts = resolve_task("STSBenchmark", data_dir=scifact_dir.parents[1])
    assert sts.metadata.name == "STSBenchmark"
    with pytest.raises(ConfigError, match="evaluates split"):
        resolve_task("SciFact", split="train", data_dir=scifact_dir.parents[1])


def test_cli_rejects_unknown_task_before_encoding(toy_beir, tmp_path, capsys):
    from densekit.cli import main

    code = main(["eval", "--model", "unused-model", "--data", str(toy_beir), "--output", str(tmp_path / "o"),
                 "--mteb-task", "NoSuchTaskXYZ"])
    assert code == 2
    assert "unknown MTEB task 'NoSuchTaskXYZ'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.integration
def test_minilm_subset_densekit_equals_mteb_and_pytrec_eval(scifact_dir, minilm_path, tmp_path):
    """all-MiniLM-L6-v2 on a SciFact subset (20 test queries, their positives + sampled docs = 200 docs)."""
    import pytrec_eval

    from densekit.data.beir import load_beir
    from densekit.evaluation.beir import dense_run
    from densekit.evaluation.mteb_run import MtebArgs, run_mteb
    from densekit.models import load_model

    folder = scifact_subset(scifact_dir, tmp_path / "scifact_subset", n_queries=20, n_docs=200,
                            splits=("test",))
    qrels = load_beir(folder, "test").qrels
    model = load_model(minilm_path, max_seq_length=128)  # short docs keep it fast; same model for both paths

    args = MtebArgs(model=minilm_path, tasks=[str(folder)], output=str(tmp_path / "out"))
    summary = run_mteb(args, model=model)
    mteb_scores = summary["tasks"]["scifact_subset"]["test"]["scores"]
    run = dense_run(model, load_beir(folder, "test"), k=100)
    ours = evaluate_run(qrels, run)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.10"}).evaluate(run)
    pairs = (("ndcg_at_10", "ndcg_cut_10"), ("recall_at_100", "recall_100"), ("map_at_10", "map_cut_10"))
    for key, trec_key in pairs:
        assert ours[key] == pytest.approx(np.mean([v[trec_key] for v in trec.values()]), abs=1e-6), key
        assert ours[key] == pytest.approx(mteb_scores[key], abs=1e-5), key  # mteb rounds to 5 decimals
    assert ours["mrr_at_10"] == pytest.approx(mteb_scores["mrr_at_10"], abs=1e-5)
