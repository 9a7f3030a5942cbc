"""InfoNCE with in-batch and hard negatives.

van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering", EMNLP 2020;
Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017.

For a batch of ``(query_i, positive_i, negative_i_1..n)`` every query is scored against all positives and all
hard negatives in the batch (on every device, under ``torchrun``); the loss is the cross-entropy of picking its
own positive. Scores are cosine similarities times ``scale`` (= 1 / temperature).

``false_negative_margin`` m masks every in-batch or hard candidate whose cosine with the query is at least
the positive's minus m (a copy of the positive always is): with cluster-grouped batches the other queries'
positives are often relevant too, and must not be pushed away.

``context.negative_weights`` (rows x hard negatives, from the ``weight`` that ``densekit mine --soft-weights``
writes, each example's row index in ``labels``) scales each query's own hard negatives inside the softmax
denominator (DCLR-style instance weighting, Zhou et al., ACL 2022): weight 0 removes a likely false negative,
1 keeps it as is.

Inputs:

=========================================  ==========================================  =======================
columns                                    labels                                      model output
=========================================  ==========================================  =======================
(anchor, positive)                         none, or row indices with negative weights  sentence_embedding
(anchor, positive, negative_1..negative_n) none, or row indices with negative weights  sentence_embedding
=========================================  ==========================================  =======================
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.training.cluster_batching import mask_in_batch_false_negatives
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext, cosine_scores, own_columns


def own_negative_log_weights(weights: Tensor, labels: Tensor, columns: int, n_candidates: int, total: int,
                             offset: int) -> Tensor:
    """log(weight) at each local anchor's own hard negatives, 0 elsewhere (``[batch, n_candidates]``)."""
    rows = labels.long().cpu()
    w = weights[rows][:, :columns].clamp_min(0.0)
    out = torch.zeros(len(rows), n_candidates, dtype=w.dtype)
    index = own_columns(len(rows), columns, total, offset)
    out.scatter_(1, index, torch.log(w))  # log 0 = -inf: the negative is dropped
    return out


@register_loss("infonce")
class InfoNCELoss(DensekitLoss):
    uses_weights = True
    gathers = True

    def __init__(self, model, scale: float = 20.0, false_negative_margin: float | None = None, *,
                 context: LossContext | None = None) -> None:
        super().__init__(model, context)
        self.scale = scale
        self.false_negative_margin = false_negative_margin

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        anchors = embeddings[0]
        batch = len(anchors)
        columns = [self.gather(column) for column in embeddings[1:]]  # positives, then each hard-negative column
        total, offset = len(columns[0]), self.offset(batch)
        scores = cosine_scores(anchors, torch.cat(columns))
        targets = offset + torch.arange(batch, device=anchors.device)
        if self.false_negative_margin is not None:
            scores = mask_in_batch_false_negatives(scores, targets, self.false_negative_margin)
        logits = scores * self.scale
        weights = self.context.negative_weights
        if weights is not None and labels is not None and len(embeddings) > 2:
            logits = logits + own_negative_log_weights(weights, labels, len(embeddings) - 2, logits.shape[1],
                                                       total, offset).to(logits.device, logits.dtype)
        return F.cross_entropy(logits, targets)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "false_negative_margin": self.false_negative_margin}

    @property
    def citation(self) -> str:
        return """@article{oord2018cpc, title={Representation Learning with Contrastive Predictive Coding},
author={van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol}, journal={arXiv:1807.03748}, year={2018}}"""
