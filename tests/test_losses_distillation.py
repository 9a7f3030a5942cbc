"""Distillation losses against hand computations, and a teacher-labelled mined file through training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from densekit.data.records import Negative, TrainingRecord
from densekit.errors import DataError
from densekit.training.losses.base import LossContext
from densekit.training.losses.listwise import ListwiseDistillationLoss
from densekit.training.losses.margin_mse import MarginMSELoss
from densekit.training.rows import TrainingRows


def rows_with_scores(scores: list[list[float]]) -> TrainingRows:
    """Row i: positive d{i} scored scores[i][0], negatives n{i}_{j} scored scores[i][1:]."""
    records = [TrainingRecord(f"q{i}", f"p{i}", [Negative(f"n{i}{j}", doc_id=f"n{i}_{j}", teacher_score=s)
                                                 for j, s in enumerate(row[1:])],
                              query_id=f"q{i}", positive_id=f"d{i}", audit={"positive_teacher_score": row[0]})
               for i, row in enumerate(scores)]
    return TrainingRows(records, {})


def unit(rng, n, d=6):
    x = rng.normal(size=(n, d))
    return torch.tensor(x / np.linalg.norm(x, axis=1, keepdims=True))


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_listwise_kl_equals_the_hand_computed_kl():
    rng = np.random.default_rng(0)
    scores = [[0.9, 0.2, 0.1], [0.7, 0.65, 0.05]]
    rows = rows_with_scores(scores)
    q, p, n1, n2 = (unit(rng, 2) for _ in range(4))
    loss = ListwiseDistillationLoss(torch.nn.Identity(), student_temperature=0.05, teacher_temperature=0.3,
                                    infonce_weight=0.0, normalize_teacher=False, context=LossContext(rows=rows))
    value = loss.compute_loss_from_embeddings([q, p, n1, n2], torch.tensor([0, 1])).item()
    student = np.stack([(q * c).sum(1).numpy() for c in (p, n1, n2)], axis=1) / 0.05
    log_s, log_t = log_softmax(student), log_softmax(np.array(scores) / 0.3)
    expected = float((np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean())
    assert value == pytest.approx(expected, rel=1e-9)


def test_listwise_contrastive_term_masks_the_teachers_likely_positives():
    """Row 1's first negative scores 0.65 against a top of 0.7: above 0.6 x top, it is no negative for InfoNCE."""
    rng = np.random.default_rng(1)
    rows = rows_with_scores([[0.9, 0.2], [0.7, 0.65]])
    q, p, n = unit(rng, 2), unit(rng, 2), unit(rng, 2)
    loss = ListwiseDistillationLoss(torch.nn.Identity(), infonce_weight=1.0, normalize_teacher=False,
                                    context=LossContext(rows=rows))
    labels = torch.tensor([0, 1])
    teacher = loss.teacher(labels, 2)
    kl = loss.compute_loss_from_embeddings([q, p, n], labels).item() - loss.contrastive([q, p, n], labels,
                                                                                         teacher).item()
    logits = torch.cat([q @ p.T, q @ n.T], dim=1).numpy() / 0.01
    logits[1, 3] = -np.inf  # n1 of row 1, masked for query 1 only
    expected = -np.mean([log_softmax(logits)[i, i] for i in range(2)])
    assert loss.contrastive([q, p, n], labels, teacher).item() == pytest.approx(expected, rel=1e-9)
    assert kl > 0


def test_margin_mse_equals_the_hand_computed_loss():
    rows = rows_with_scores([[0.9, 0.2, 0.4], [0.6, 0.5, 0.1]])
    rng = np.random.default_rng(2)
    q, p, n1, n2 = (unit(rng, 2) for _ in range(4))
    loss = MarginMSELoss(torch.nn.Identity(), scale=2.0, context=LossContext(rows=rows))
    value = loss.compute_loss_from_embeddings([q, p, n1, n2], torch.tensor([0, 1])).item()
    student = 2.0 * np.stack([(q * c).sum(1).numpy() for c in (p, n1, n2)], axis=1)
    teacher = np.array([[0.9, 0.2, 0.4], [0.6, 0.5, 0.1]])
    expected = np.mean(((student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])) ** 2)
    assert value == pytest.approx(expected, rel=1e-9)


def test_records_without_teacher_scores_are_named():
    rows = TrainingRows([TrainingRecord("q", "p", [Negative("n", doc_id="x")], query_id="q0", positive_id="d0",
                                        where="mined.jsonl:7")], {})
    with pytest.raises(DataError, match="mined.jsonl:7.*positive_teacher_score"):
        ListwiseDistillationLoss(torch.nn.Identity(), context=LossContext(rows=rows))


@pytest.mark.integration
def test_a_teacher_labelled_mined_file_trains_a_listwise_student(scifact_dir, tiny_model_dir, minilm_path, tmp_path):
    """densekit mine keeps the teacher's score of every candidate; densekit train distils them."""
    from densekit.cli import main
    from tests.helpers import scifact_subset

    beir = scifact_subset(scifact_dir, tmp_path / "beir", n_queries=24, n_docs=150, splits=("train",))
    mined = tmp_path / "mined.jsonl"
    assert main(["mine", "--data", str(beir), "--retriever", "bm25", "--num-negatives", "4", "--window", "1", "20",
                 "--teacher", "bi-encoder", "--teacher-model", minilm_path, "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(mined)]) == 0
    records = [json.loads(line) for line in mined.read_text().splitlines()]
    assert all("positive_teacher_score" in r and all("teacher_score" in n for n in r["negatives"]) for r in records)
    for loss in ("listwise", "margin-mse"):
        out = tmp_path / loss
        assert main(["train", "--model", tiny_model_dir, "--data", str(mined), "--loss", loss, "--max-steps", "3",
                     "--batch-size", "8", "--num-negatives", "4", "--output", str(out)]) == 0
        info = json.loads((out / "densekit_train.json").read_text())
        assert info["loss"] == loss and info["global_step"] == 3 and math.isfinite(info["train_loss"])


@pytest.mark.integration
def test_listwise_under_ance_distils_the_refreshed_teacher_scores(scifact_dir, tiny_model_dir, minilm_path, tmp_path):
    """The student's own new top candidates, rescored by the teacher in the refresh worker, replace the mined
    lists: after the swap the loss reads the worker's teacher scores for the refreshed negatives."""
    import time as clock

    from transformers import TrainerCallback

    from densekit.cli import main
    from densekit.training.config import TrainConfig
    from densekit.training.train import build_trainer
    from tests.helpers import scifact_subset

    beir = scifact_subset(scifact_dir, tmp_path / "beir", n_queries=24, n_docs=150, splits=("train",))
    mined = tmp_path / "mined.jsonl"
    teacher = ["--teacher", "bi-encoder", "--teacher-model", minilm_path]
    assert main(["mine", "--data", str(beir), "--retriever", "bm25", "--num-negatives", "3", "--window", "1", "20",
                 *teacher, "--cache-dir", str(tmp_path / "cache"), "--output", str(mined)]) == 0
    state = tmp_path / "ance.ance"

    class WaitForRefresh(TrainerCallback):
        def on_step_end(self, args, state_, control, **kwargs):
            if state_.global_step == 2:
                deadline = clock.time() + 600
                while not (state / "negatives-0000.json").exists() and clock.time() < deadline:
                    clock.sleep(0.5)
                clock.sleep(2)

    config = TrainConfig.from_options(model=tiny_model_dir, data=str(mined), beir=str(beir),
                                      output=str(tmp_path / "ance"), mode="ance", loss="listwise", max_steps=5,
                                      batch_size=8, refresh_steps=2, refresh_window=[1, 20],
                                      refresh_teacher="bi-encoder", refresh_teacher_model=minilm_path,
                                      save_steps=100, num_negatives=3)
    run = build_trainer(config, [WaitForRefresh()])
    run.trainer.train()
    rows = run.setup.rows
    assert rows.store.version >= 1 and rows.store.scores
    refreshed = json.loads((state / "negatives-0000.json").read_text())
    qid = next(iter(refreshed["teacher_scores"]))
    row = next(i for i, r in enumerate(rows.records) if r.query_id == qid)
    entry = rows.store.scores[qid]
    expected = [entry["positives"][rows.positive_id(row)]] + [entry["negatives"][d] for d in rows.store.get(qid)][:3]
    assert rows.teacher_scores(row, len(expected) - 1) == pytest.approx(expected)
    assert rows.negative_ids(row) == refreshed["negatives"][qid]
    with pytest.raises(Exception, match="--refresh-teacher"):
        build_trainer(TrainConfig.from_options(model=tiny_model_dir, data=str(mined), beir=str(beir),
                                               output=str(tmp_path / "x"), mode="ance", loss="listwise"))
