"""MW loss: maximise the Mann-Whitney U statistic (the AUC) of positive-vs-negative scores.

Sheikholeslami et al., "Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval" (ServiceNow,
arXiv:2510.00137, 2025). The AUC is the fraction of (positive, negative) pairs ranked correctly, ``U / (n+ n-)``;
its smooth surrogate is binary cross-entropy on score differences::

    loss = mean over (p in P, n in N) of softplus(-scale * (s_p - s_n))

``comparison="global"`` (the default, the paper's Figure 2): P holds every query's positive score in the batch
and N every negative (query, document) score in the batch, and *every* positive is compared with *every* negative,
across queries - more comparisons at the same similarity cost, and what makes scores separate globally, so one
threshold works for all queries. ``comparison="per_query"`` compares each query's positive only with its own
row's negatives (the per-query pairwise / RankNet loss densekit had before; STAR's pairwise form without masks).

Scores are cosine similarities times ``scale``. The negatives of query ``i`` are the other rows' positives
(in-batch) and every hard negative in the batch (its own and the other rows'), each switchable; under
``torchrun`` the candidates and, for the global comparison, the negative scores of every device are gathered.
We found the paper's abstract and a summary of its Figure 2 but no code or full equation: the normalisation (a
mean over all compared pairs) and the use of cosine times a scale are our choices.

Inputs: columns ``(query, positive[, negative_1..n])``; no labels.
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

COMPARISONS = ("global", "per_query")


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

    def __init__(self, model, scale: float = 20.0, in_batch_negatives: bool = True, hard_negatives: bool = True,
                 comparison: str = "global", *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if not (in_batch_negatives or hard_negatives):
            raise ConfigError("mw loss needs in_batch_negatives or hard_negatives (or both)")
        if comparison not in COMPARISONS:
            raise ConfigError(f"mw: comparison must be one of {', '.join(COMPARISONS)}, got '{comparison}'")
        self.comparison = comparison
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
        if self.comparison == "per_query":
            margins = (positive.unsqueeze(1) - scores)[mask]
            return F.softplus(-self.scale * margins).mean()
        negatives = self.gather(scores[mask])  # every negative (query, document) score of the global batch
        pairs = F.softplus(-self.scale * (positive.unsqueeze(1) - negatives.unsqueeze(0)))
        return self.mean_over_ranks(pairs.sum(), torch.tensor(float(pairs.numel())))

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "in_batch_negatives": self.in_batch_negatives,
                "hard_negatives": self.hard_negatives, "comparison": self.comparison}

    @property
    def citation(self) -> str:
        return """@article{sheikholeslami2025mw,
title={Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval},
author={Sheikholeslami, Nima and others}, journal={arXiv:2510.00137}, year={2025}}"""


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
