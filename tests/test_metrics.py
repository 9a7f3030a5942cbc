import random

import pytest
import pytrec_eval

from densekit.evaluation.metrics import evaluate_run, rank_documents, read_trec_run, write_trec_run

PYTREC_KEYS = {"ndcg_at_10": "ndcg_cut_10", "recall_at_100": "recall_100", "map": "map", "map_at_10": "map_cut_10",
               "precision_at_5": "P_5", "ndcg_at_1": "ndcg_cut_1", "recall_at_10": "recall_10"}


def random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        judged = rng.sample(docs, rng.randint(1, 6))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2]) for d in judged}
        # coarse scores create ties, which trec_eval breaks by document id (descending)
        run[f"q{q}"] = {d: round(rng.random(), 1) for d in rng.sample(docs, 40)}
    return qrels, run


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_pytrec_eval(seed):
    qrels, run = random_case(seed)
    ours = evaluate_run(qrels, run, per_query=True)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(PYTREC_KEYS.values()) | {"recip_rank"})
    theirs = evaluator.evaluate(run)
    assert ours["num_queries"] == len(theirs)
    for ours_key, their_key in PYTREC_KEYS.items():
        mean = sum(q[their_key] for q in theirs.values()) / len(theirs)
        assert ours[ours_key] == pytest.approx(mean, abs=1e-9), ours_key
        for qid, per in theirs.items():
            assert ours["per_query"][qid][ours_key] == pytest.approx(per[their_key], abs=1e-9), (qid, ours_key)
    mrr = sum(q["recip_rank"] for q in theirs.values()) / len(theirs)
    assert ours["mrr"] == pytest.approx(mrr, abs=1e-9)


def test_known_values():
    qrels = {"q": {"a": 1, "c": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    m = evaluate_run(qrels, run)
    assert m["mrr_at_10"] == 1.0
    assert m["recall_at_1"] == 0.5 and m["recall_at_3"] == 1.0
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert rank_documents({"x": 1.0, "y": 1.0, "z": 2.0}) == ["z", "y", "x"]


def test_trec_run_roundtrip(tmp_path):
    run = {"q1": {"a": 0.5, "b": 0.9}, "q2": {"c": 0.1}}
    path = tmp_path / "run.trec"
    write_trec_run(run, path, tag="t")
    assert path.read_text().splitlines()[0] == "q1 Q0 b 1 0.900000 t"
    assert read_trec_run(path) == run
