"""MarginMSE: the student's positive-negative score margin regresses onto the teacher's.

Hofstätter, Althammer, Schröder, Sertkan and Hanbury, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation", 2020 (arXiv:2010.02666); the authors' code
(sebastian-hofstaetter/matchmaker, ``losses/msmargin.py``): ``mean((s(q, d+) - s(q, d-) - (t(q, d+) - t(q, d-)))^2)``
with raw teacher scores. Here every mined negative of a row is one ``(d+, d-)`` pair; the student's score is the
cosine times ``scale`` (Hofstätter's students score with unnormalised dot products, whose range a cosine lacks;
``scale`` 1 compares cosine margins with the teacher's, which for densekit's teachers are sigmoid probabilities or
cosines, so on the same [0, 1] range). The pairwise baseline for :mod:`listwise <densekit.training.losses.listwise>`
distillation. Each pair is a query with its own two documents, so nothing is gathered across devices.

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

import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.errors import ConfigError
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext


@register_loss("margin-mse")
class MarginMSELoss(DensekitLoss):
    min_columns = 3
    needs_rows = True
    needs_teacher_scores = True

    def __init__(self, model, scale: float = 1.0, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if scale <= 0:
            raise ConfigError(f"margin-mse: scale must be > 0, got {scale}")
        self.scale = scale

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        if labels is None:
            raise ConfigError("margin-mse needs the row index of each example as labels")
        anchors = F.normalize(embeddings[0], dim=-1)
        docs = F.normalize(torch.stack(embeddings[1:], dim=1), dim=-1)  # [n, 1 + negatives, d]
        student = self.scale * torch.einsum("nd,ncd->nc", anchors, docs)
        rows = self.context.rows
        teacher = torch.tensor([rows.teacher_scores(int(r), len(embeddings) - 2) for r in labels.tolist()],
                               dtype=student.dtype, device=student.device)
        student_margins = student[:, :1] - student[:, 1:]
        teacher_margins = teacher[:, :1] - teacher[:, 1:]
        return F.mse_loss(student_margins, teacher_margins)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return """@article{hofstaetter2020marginmse,
title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
author={Hofst{\\"a}tter, Sebastian and Althammer, Sophia and Schr{\\"o}der, Michael and Sertkan, Mete and Hanbury,
Allan}, journal={arXiv:2010.02666}, year={2020}}"""
