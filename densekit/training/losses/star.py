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

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densekit.training.losses import LOSSES
from densekit.training.losses.infonce import cosine_scores


def relevance_mask(labels: Tensor, rows, num_negative_columns: int, static_negatives: bool = True) -> Tensor:
    """True where candidate j is relevant to (or the positive of) anchor i; candidates = positives, then negs.

    With ``static_negatives=False`` (ANCE swaps the negatives outside the rows) the hard-negative columns
    have no known ids and are only checked for copies of the positive by the caller.
    """
    idx = [int(r) for r in labels.tolist()]
    ids = [rows.positive_ids[r] for r in idx]
    for col in range(num_negative_columns):
        for r in idx:
            negs = rows.negative_ids[r] if static_negatives else []
            ids.append(negs[col % len(negs)] if negs else f"\0unknown-{r}-{col}")
    relevant = [rows.relevant.get(rows.query_ids[r], set()) | {rows.positive_ids[r]} for r in idx]
    mask = torch.tensor([[doc in rel for doc in ids] for rel in relevant], dtype=torch.bool)
    return mask


@LOSSES.register("star")
class StarLoss(nn.Module):
    def __init__(self, model: nn.Module, scale: float = 20.0, rows=None) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.rows = rows  # a TrainingRows, set by the STAR / ANCE drivers
        self.static_negatives = True  # False under ANCE: the rows' negative ids are not the ones trained on

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors, positives = embeddings[0], embeddings[1]
        candidates = torch.cat(embeddings[1:])
        scores = cosine_scores(anchors, candidates)
        n = len(anchors)
        own = torch.arange(n, device=anchors.device)
        positive_scores = scores[own, own][:, None]
        # exact copies of each anchor's own positive are never negatives
        invalid = cosine_scores(positives, candidates).detach() >= 1 - 1e-6
        if self.rows is not None and labels is not None:
            invalid |= relevance_mask(labels, self.rows, len(embeddings) - 2, self.static_negatives).to(scores.device)
        invalid[own, own] = True
        valid = ~invalid
        pair_losses = F.softplus(self.scale * (scores - positive_scores))
        count = valid.sum()
        if count == 0:
            return scores.sum() * 0.0
        return (pair_losses * valid).sum() / count

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return """@inproceedings{zhan2021star, title={Optimizing Dense Retrieval Model Training with Hard Negatives},
author={Zhan, Jingtao and Mao, Jiaxin and Liu, Yiqun and Guo, Jiafeng and Zhang, Min and Ma, Shaoping},
booktitle={SIGIR}, year={2021}}"""
