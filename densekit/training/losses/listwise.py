"""Listwise distillation: the student's distribution over each query's candidates matches the teacher's.

Tamber, Kazi, Sourabh and Lin, "Conventional Contrastive Learning Often Falls Short: Improving Dense Retrieval
with Cross-Encoder Listwise Distillation and Synthetic Data", 2025 (arXiv:2505.19274); the formulation below
follows the authors' code (github.com/manveertamber/cadet-dense-retrieval, ``train_*_listwise.py``):

* for query ``i`` and its candidates ``c`` (its positive and its mined negatives, the list the teacher scored),
  student ``log p_s = log_softmax(cos(q_i, c) / tau_s)``, teacher ``log p_t = log_softmax(t(q_i, c) / tau_t)``,
  and the loss is ``KL(p_t || p_s)`` averaged over queries (``nn.KLDivLoss(reduction="batchmean",
  log_target=True)``, no T^2 factor);
* teacher scores are min-max normalised with the 1st and 99th percentiles of all the training file's teacher
  scores and clipped to [0, 1] (the authors do it per data file), so ``tau_t`` means the same for every teacher;
* ``infonce_weight`` (0.1) times an InfoNCE term at ``contrastive_temperature`` (0.01) over the positives and hard
  negatives of the whole batch (every device's, gathered), where every candidate the teacher scores above
  ``false_negative_threshold`` (0.6) of the query's top teacher score is masked by document id, wherever it
  appears in the batch, as the authors do; the masked candidates still count in the KL term.

Defaults are the authors' (tau_s 0.05, tau_t 0.3, weight 0.1, temperature 0.01, threshold 0.6), tuned for
bge/e5-base students at 4,096 queries per step; densekit's recipe for small batches is tuned on a dev split
(docs/training.md). Deviations: the positive is the judged positive of the mined record (the authors' lists are
the student's own top-20, in which the teacher ranks the source passage first); the list is the positive plus
the record's negatives, as many as the training columns hold.

Inputs:

=================================================  ====================================  ==================
columns                                            labels                                model output
=================================================  ====================================  ==================
(query, positive, negative_1..n), teacher scores   row indices (``context.rows``)        sentence_embedding
in the mined record (``densekit mine --teacher``)
=================================================  ====================================  ==================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.errors import ConfigError
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext, cosine_scores


def percentile_range(rows, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The ``low``-th and ``high``-th percentiles of every teacher score in the training rows."""
    scores = [s for r in range(len(rows)) for s in rows.teacher_scores(r, len(rows.records[r].negatives))]
    lo, hi = np.percentile(np.asarray(scores, dtype=np.float64), [low, high])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


class TeacherTable:
    """Each row's normalised teacher scores for its positive and negatives, as a tensor looked up by labels."""

    def __init__(self, rows, normalize: bool = True) -> None:
        self.rows = rows
        self.low, self.high = percentile_range(rows) if normalize else (0.0, 1.0)
        self.normalize = normalize

    def __call__(self, labels: Tensor, columns: int) -> Tensor:
        raw = torch.tensor([self.rows.teacher_scores(int(r), columns - 1) for r in labels.tolist()],
                           dtype=torch.float64)
        if self.normalize:
            raw = ((raw - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        return raw


@register_loss("listwise")
class ListwiseDistillationLoss(DensekitLoss):
    needs_rows = True
    needs_teacher_scores = True
    gathers = True

    def __init__(self, model, student_temperature: float = 0.05, teacher_temperature: float = 0.3,
                 infonce_weight: float = 0.1, contrastive_temperature: float = 0.01,
                 false_negative_threshold: float | None = 0.6, normalize_teacher: bool = True, *,
                 context: LossContext | None = None) -> None:
        super().__init__(model, context)
        for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature),
                            ("contrastive_temperature", contrastive_temperature)):
            if value <= 0:
                raise ConfigError(f"listwise: {name} must be > 0, got {value}")
        if infonce_weight < 0:
            raise ConfigError(f"listwise: infonce_weight must be >= 0, got {infonce_weight}")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.infonce_weight = infonce_weight
        self.contrastive_temperature = contrastive_temperature
        self.false_negative_threshold = false_negative_threshold
        self.normalize_teacher = normalize_teacher
        self.teacher = TeacherTable(self.context.rows, normalize_teacher)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        if labels is None:
            raise ConfigError("listwise distillation needs the row index of each example as labels")
        anchors = embeddings[0]
        columns = len(embeddings) - 1
        own = torch.stack(embeddings[1:], dim=1)  # [n, 1 + negatives, d]: each query's own list
        student = torch.einsum("nd,ncd->nc", F.normalize(anchors, dim=-1), F.normalize(own, dim=-1))
        teacher = self.teacher(labels, columns).to(student.device)
        log_student = F.log_softmax(student.double() / self.student_temperature, dim=-1)
        log_teacher = F.log_softmax(teacher / self.teacher_temperature, dim=-1)
        loss = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
        if self.infonce_weight > 0:
            loss = loss + self.infonce_weight * self.contrastive(embeddings, labels, teacher)
        return loss.to(anchors.dtype)

    def contrastive(self, embeddings: list[Tensor], labels: Tensor, teacher: Tensor) -> Tensor:
        """InfoNCE over every device's positives and negatives, the teacher's likely positives masked by id."""
        anchors = embeddings[0]
        n, columns = len(anchors), len(embeddings) - 1
        candidates = torch.cat([self.gather(column) for column in embeddings[1:]])
        total, offset = len(candidates) // columns, self.offset(n)
        logits = cosine_scores(anchors, candidates) / self.contrastive_temperature
        targets = offset + torch.arange(n, device=anchors.device)
        if self.false_negative_threshold is not None:
            mask = self.false_negatives(labels, self.gather_labels(labels), teacher, columns, total)
            mask[torch.arange(n), targets.cpu()] = False
            logits = logits.masked_fill(mask.to(logits.device), float("-inf"))
        return F.cross_entropy(logits, targets)

    def false_negatives(self, labels: Tensor, all_labels: Tensor, teacher: Tensor, columns: int,
                        total: int) -> Tensor:
        """``[n, columns * total]``: the gathered candidates whose document the teacher scores, for this query,
        above the threshold times its top score (its positive included)."""
        lists = {int(r): self.candidate_ids(int(r), columns) for r in all_labels.tolist()}
        ids = [lists[int(r)][c] for c in range(columns) for r in all_labels.tolist()]  # column by column
        mask = torch.zeros(len(labels), len(ids), dtype=torch.bool)
        for i, r in enumerate(labels.tolist()):
            scores = teacher[i].tolist()
            cut = self.false_negative_threshold * max(scores)
            likely = {d for d, s in zip(lists[int(r)], scores, strict=True) if d is not None and s > cut}
            if likely:
                mask[i] = torch.tensor([d in likely for d in ids])
        return mask

    def candidate_ids(self, row: int, columns: int) -> list[str | None]:
        """The document ids of a row's training columns: its positive, then its negatives as the columns cycle
        them (None when the negatives have no ids)."""
        rows = self.context.rows
        negs = rows.negative_ids(row)  # under ANCE: the refreshed ones
        return [rows.positive_id(row)] + [negs[c % len(negs)] if negs else None for c in range(columns - 1)]

    def get_config_dict(self) -> dict[str, Any]:
        return {"student_temperature": self.student_temperature, "teacher_temperature": self.teacher_temperature,
                "infonce_weight": self.infonce_weight, "contrastive_temperature": self.contrastive_temperature,
                "false_negative_threshold": self.false_negative_threshold,
                "normalize_teacher": self.normalize_teacher}

    @property
    def citation(self) -> str:
        return """@article{tamber2025listwise,
title={Conventional Contrastive Learning Often Falls Short: Improving Dense Retrieval with Cross-Encoder Listwise
Distillation and Synthetic Data}, author={Tamber, Manveer Singh and Kazi, Suleman and Sourabh, Vivek and Lin, Jimmy},
journal={arXiv:2505.19274}, year={2025}}"""
