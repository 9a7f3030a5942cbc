"""InfoNCE with in-batch and hard negatives.

van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering", EMNLP 2020;
Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017.

For a batch of ``(query_i, positive_i, negative_i_1..n)`` every query is scored against all
positives and all hard negatives in the batch; the loss is the cross-entropy of picking its own
positive. Scores are cosine similarities times ``scale`` (= 1 / temperature).

``false_negative_margin`` m masks every in-batch or hard candidate whose cosine with the query is at least
the positive's minus m (a copy of the positive always is): with cluster-grouped batches the other queries'
positives are often relevant too, and must not be pushed away.

``negative_weights`` (rows x hard negatives, set by the trainer from the ``weight`` that ``densekit mine
--soft-weights`` writes, with each example's row index as ``labels``) scales each query's own hard negatives
inside the softmax denominator (DCLR-style instance weighting, Zhou et al., ACL 2022): weight 0 removes a
likely false negative, 1 keeps it as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densekit.training.cluster_batching import mask_in_batch_false_negatives
from densekit.training.losses import LOSSES


def cosine_scores(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def own_negative_log_weights(weights: Tensor, labels: Tensor, columns: int, n_candidates: int) -> Tensor:
    """log(weight) at each anchor's own hard negatives (candidate ``B + c * B + i``), 0 elsewhere."""
    rows = labels.long().cpu()
    batch = len(rows)
    out = torch.zeros(batch, n_candidates)
    w = weights[rows][:, :columns].clamp_min(0.0)
    idx = torch.arange(batch)
    for c in range(columns):
        out[idx, batch + c * batch + idx] = torch.log(w[:, c])  # log 0 = -inf: the negative is dropped
    return out


@LOSSES.register("infonce")
class InfoNCELoss(nn.Module):
    def __init__(self, model: nn.Module, scale: float = 20.0, false_negative_margin: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.false_negative_margin = false_negative_margin
        self.negative_weights: Tensor | None = None

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors = embeddings[0]
        candidates = torch.cat(embeddings[1:])  # positives first, then each column of hard negatives
        scores = cosine_scores(anchors, candidates)
        targets = torch.arange(len(anchors), device=anchors.device)
        if self.false_negative_margin is not None:
            scores = mask_in_batch_false_negatives(scores, targets, self.false_negative_margin)
        logits = scores * self.scale
        if self.negative_weights is not None and labels is not None and len(embeddings) > 2:
            logits = logits + own_negative_log_weights(self.negative_weights, labels, len(embeddings) - 2,
                                                       logits.shape[1]).to(logits.device)
        return F.cross_entropy(logits, targets)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "false_negative_margin": self.false_negative_margin}

    @property
    def citation(self) -> str:
        return """@article{oord2018cpc, title={Representation Learning with Contrastive Predictive Coding},
author={van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol}, journal={arXiv:1807.03748}, year={2018}}"""
