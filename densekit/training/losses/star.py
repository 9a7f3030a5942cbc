"""STAR: static hard negatives plus in-batch random negatives, with a pairwise loss and relevance masking.

Zhan et al., "Optimizing Dense Retrieval Model Training with Hard Negatives", SIGIR 2021 (the DRhard code).
Every query is paired with its positive against every other candidate in the batch: the other queries'
positives (the "random" negatives, approximated in-batch) and all hard negatives of the batch. Each pair
costs ``log(1 + exp(scale * (s(q, d-) - s(q, d+))))`` (RankNet / a two-way softmax), and the loss is the mean
over valid pairs. A pair is invalid when the candidate is relevant to the query according to the qrels (two
queries citing the same paper, or a hard negative that is judged relevant to another query in the batch).

The ids come through ``labels`` (the row index of each example, see ``densekit.training.dynamic_data``); the
loss is then given ``rows`` by the driver. Without ``rows`` only exact copies of the positive are masked.
Scores are cosine similarities times ``scale`` (STAR used raw inner products of unnormalised RoBERTa
vectors; cosine needs the scale).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext, cosine_scores


def relevance_mask(labels: Tensor, rows, num_negative_columns: int, candidate_labels: Tensor | None = None) -> Tensor:
    """True where candidate j is relevant to (or the positive of) anchor i. Anchors are the rows ``labels``;
    candidates the positives of the rows ``candidate_labels`` (default: the same), then each hard-negative
    column of those rows (the negatives training sees now: under ANCE, the refreshed ones)."""
    anchors = [int(r) for r in labels.tolist()]
    others = anchors if candidate_labels is None else [int(r) for r in candidate_labels.tolist()]
    ids = [rows.positive_id(r) for r in others]
    for col in range(num_negative_columns):
        for r in others:
            negs = rows.negative_ids(r)
            ids.append(negs[col % len(negs)] if negs else f"\0unknown-{r}-{col}")
    relevant = [rows.relevant_to(r) for r in anchors]
    return torch.tensor([[doc in rel for doc in ids] for rel in relevant], dtype=torch.bool)


@register_loss("star")
class StarLoss(DensekitLoss):
    """Inputs: columns ``(query, positive[, negative_1..n])``, labels = row indices (``context.rows``) for the
    relevance mask (without rows only copies of the positive are masked)."""

    gathers = True

    def __init__(self, model, scale: float = 20.0, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        self.scale = scale

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        anchors, positives = embeddings[0], embeddings[1]
        n = len(anchors)
        candidates = torch.cat([self.gather(column) for column in embeddings[1:]])
        offset = self.offset(n)
        scores = cosine_scores(anchors, candidates)
        own = torch.arange(n, device=anchors.device)
        positive_scores = scores[own, offset + own][:, None]
        # exact copies of each anchor's own positive are never negatives
        invalid = cosine_scores(positives, candidates).detach() >= 1 - 1e-6
        rows = self.context.rows
        if rows is not None and labels is not None:
            invalid |= relevance_mask(labels, rows, len(embeddings) - 2, self.gather_labels(labels)).to(scores.device)
        invalid[own, offset + own] = True
        valid = ~invalid
        pair_losses = F.softplus(self.scale * (scores - positive_scores))
        return self.mean_over_ranks((pair_losses * valid).sum(), valid.sum())

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return """@inproceedings{zhan2021star, title={Optimizing Dense Retrieval Model Training with Hard Negatives},
author={Zhan, Jingtao and Mao, Jiaxin and Liu, Yiqun and Guo, Jiafeng and Zhang, Min and Ma, Shaoping},
booktitle={SIGIR}, year={2021}}"""
