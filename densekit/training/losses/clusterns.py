"""ClusterNS: clustering-aware negative sampling for unsupervised sentence embeddings.

Deng et al., "Clustering-Aware Negative Sampling for Unsupervised Sentence Representation", Findings of ACL 2023;
as the authors' code does it (github.com/djz233/ClusterNS, ``simcse/models.py``):

- Rows are ``(s, s)`` dropout twins (unsupervised SimCSE): ``z1``, ``z2``; InfoNCE over ``cos(z1, z2) / 0.05``.
- ``clusters`` centroids live in the loss, clustered online from the batches: clustering starts once the mean
  cosine over the whole ``z1 x z2`` matrix has fallen to ``start_cosine`` (0.4); the centroids are then
  initialised greedily from that batch's ``z1`` (a random first one, then each next the row least similar to the
  last one chosen), and after every step each row of ``z1`` (detached) is assigned to its most similar centroid and
  every centroid that received rows moves to ``lr * sum(members) + (1 - lr) * centroid`` (``lr`` 1e-3; the sum,
  not the mean, as the authors' code has it).
- Hard negatives: each row's *second*-nearest centroid (detached) is appended as ``B`` more candidates, so every
  anchor is also contrasted with every row's nearest other cluster.
- False negatives: in-batch pairs in the same cluster stay in InfoNCE's denominator but get the bidirectional
  margin loss on ``delta = cos(z1_i, z2_j) - cos(z1_i, z2_i)``: ``relu(delta + alpha) + relu(-delta - beta)``,
  which keeps a same-cluster pair between ``beta`` and ``alpha`` below the positive (averaged over the whole
  ``B x B`` matrix, as in the code), weighted by ``bml_weight``.

Defaults are the authors' BERT-base ones (k 128, lr 1e-3, start 0.4, bml_weight 1e-3, alpha 0, beta 0.3,
temperature 0.05) except ``clusters``, which is capped at the batch size (the initialisation draws the centroids
from one batch; the authors' 128 needs a batch of at least 128). Deviations: the clustering runs on the sentence
embedding (the authors' runs on their MLP projection) and per device under ``torchrun`` (the authors gather the
batch for the initialisation).

Inputs: columns ``(s, s)``; no labels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.errors import ConfigError
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext, cosine_scores


@register_loss("clusterns")
class ClusterNSLoss(DensekitLoss):
    def __init__(self, model, temperature: float = 0.05, clusters: int = 128, lr: float = 1e-3,
                 start_cosine: float = 0.4, bml_weight: float = 1e-3, alpha: float = 0.0, beta: float = 0.3,
                 seed: int = 0, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if clusters < 2:
            raise ConfigError(f"clusterns: clusters must be >= 2, got {clusters}")
        self.temperature, self.clusters, self.lr = temperature, clusters, lr
        self.start_cosine, self.bml_weight, self.alpha, self.beta = start_cosine, bml_weight, alpha, beta
        self.seed = seed
        self.register_buffer("centroids", torch.zeros(0), persistent=False)

    @property
    def initialised(self) -> bool:
        return self.centroids.numel() > 0

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        z1, z2 = embeddings[0], embeddings[1]
        batch_cos = cosine_scores(z1, z2)
        logits = batch_cos / self.temperature
        targets = torch.arange(len(z1), device=z1.device)
        if not self.initialised and batch_cos.detach().mean() <= self.start_cosine:
            self.initialise(F.normalize(z1.detach(), dim=-1))
        if not self.initialised:
            return F.cross_entropy(logits, targets)
        anchors = F.normalize(z1.detach(), dim=-1)
        similarity = anchors @ self.centroids.T
        nearest = similarity.topk(min(2, len(self.centroids)), dim=-1).indices
        hard = self.centroids[nearest[:, -1]]  # each row's second-nearest centroid
        logits = torch.cat([logits, cosine_scores(z1, hard) / self.temperature], dim=1)
        loss = F.cross_entropy(logits, targets)
        same = nearest[:, :1] == nearest[:, :1].T
        same.fill_diagonal_(False)
        loss = loss + self.bml_weight * self.bidirectional_margin(batch_cos, same)
        self.update(anchors, nearest[:, 0])
        return loss

    def bidirectional_margin(self, batch_cos: Tensor, same_cluster: Tensor) -> Tensor:
        delta = (batch_cos - batch_cos.diagonal().unsqueeze(1)) * same_cluster
        return (F.relu(delta + self.alpha) + F.relu(-delta - self.beta)).mean()

    @torch.no_grad()
    def initialise(self, anchors: Tensor) -> None:
        k = min(self.clusters, len(anchors))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = [int(torch.randint(len(anchors), (1,), generator=generator))]
        similarity = anchors @ anchors.T
        while len(chosen) < k:
            row = similarity[chosen[-1]].clone()
            row[chosen] = 100.0
            chosen.append(int(row.argmin()))
        self.centroids = anchors[chosen].clone()

    @torch.no_grad()
    def update(self, anchors: Tensor, assignment: Tensor) -> None:
        members = F.one_hot(assignment, len(self.centroids)).to(anchors.dtype)  # [B, k]
        sums = members.T @ anchors
        updated = members.sum(0) > 0
        self.centroids[updated] = self.lr * sums[updated] + (1 - self.lr) * self.centroids[updated]

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "clusters": self.clusters, "lr": self.lr,
                "start_cosine": self.start_cosine, "bml_weight": self.bml_weight, "alpha": self.alpha,
                "beta": self.beta}

    @property
    def citation(self) -> str:
        return """@inproceedings{deng2023clusterns,
title={Clustering-Aware Negative Sampling for Unsupervised Sentence Representation},
author={Deng, Jinghao and Wan, Fanqi and Yang, Tao and Quan, Xiaojun and Wang, Rui},
booktitle={Findings of ACL}, year={2023}}"""
