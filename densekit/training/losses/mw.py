"""MW loss: maximise the Mann-Whitney U statistic (the AUC) of positive-vs-negative scores.

"Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval" (2025). The AUC of a query is the
fraction of (positive, negative) pairs ranked correctly, ``U / (n+ n-)``; its smooth surrogate is binary
cross-entropy with logits on the score differences, label 1::

    loss = mean over (i, j) of softplus(-scale * (s(q_i, p_i) - s(q_i, n_j)))

Scores are cosine similarities. The negatives of query ``i`` are the other rows' positives (in-batch) and
every hard negative in the batch (its own and the other rows'), each switchable. Unlike InfoNCE the loss
does not renormalise over the batch, so it pushes every negative below the positive by itself and the
resulting scores are comparable across queries (what a threshold or an AUC measures).
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


def negative_mask(batch_size: int, num_columns: int, in_batch: bool, hard: bool, device=None,
                  total: int | None = None, offset: int = 0) -> Tensor:
    """``[batch, total * (num_columns - 1)]`` boolean mask of the candidates that are negatives for each row.

    Candidate block 0 holds the (gathered) positives, ``total`` rows with row ``i``'s own at ``offset + i``;
    blocks 1.. the hard negatives column by column, laid out the same way.
    """
    total = batch_size if total is None else total
    own = torch.zeros(batch_size, total, dtype=torch.bool, device=device)
    own[torch.arange(batch_size, device=device), offset + torch.arange(batch_size, device=device)] = True
    blocks = [~own if in_batch else torch.zeros_like(own)]
    for _ in range(num_columns - 2):
        if not hard:
            blocks.append(torch.zeros_like(own))
        else:
            blocks.append(torch.ones_like(own) if in_batch else own.clone())
    return torch.cat(blocks, dim=1)


@register_loss("mw")
class MWLoss(DensekitLoss):
    """Inputs: columns ``(query, positive[, negative_1..n])``; no labels."""

    gathers = True

    def __init__(self, model, scale: float = 20.0, in_batch_negatives: bool = True, hard_negatives: bool = True, *,
                 context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if not (in_batch_negatives or hard_negatives):
            raise ConfigError("mw loss needs in_batch_negatives or hard_negatives (or both)")
        self.scale = scale
        self.in_batch_negatives = in_batch_negatives
        self.hard_negatives = hard_negatives

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        anchors = embeddings[0]
        n = len(anchors)
        columns = [self.gather(column) for column in embeddings[1:]]
        total, offset = len(columns[0]), self.offset(n)
        scores = cosine_scores(anchors, torch.cat(columns))
        positive = scores[torch.arange(n, device=anchors.device), offset + torch.arange(n, device=anchors.device)]
        mask = negative_mask(n, len(embeddings), self.in_batch_negatives, self.hard_negatives, anchors.device,
                             total, offset)
        if not mask.any():
            raise ConfigError("mw loss found no negatives: use batch size > 1 or add hard negatives")
        margins = (positive.unsqueeze(1) - scores)[mask]
        return F.softplus(-self.scale * margins).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "in_batch_negatives": self.in_batch_negatives,
                "hard_negatives": self.hard_negatives}

    @property
    def citation(self) -> str:
        return """@article{mw2025auc,
title={Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval}, year={2025}}"""


def mann_whitney_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """AUC = U / (n+ n-): the fraction of (positive, negative) pairs ordered correctly, ties counting 1/2."""
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        raise ValueError("AUC needs at least one positive and one negative score")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))
