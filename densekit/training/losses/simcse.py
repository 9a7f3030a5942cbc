"""SimCSE: contrastive sentence embeddings from dropout twins (unsupervised) or NLI triplets (supervised).

Gao, Yao and Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021
(arXiv:2104.08821).

- ``simcse-unsup``: each row is ``(s, s)``. The trainer embeds the two columns in two separate forward
  passes of the model in train mode, so dropout draws different masks and the two embeddings of the same
  sentence are the positive pair; every other sentence in the batch is a negative. Cross-entropy over
  cosine similarities divided by the temperature (0.05 in the paper, i.e. ``scale = 20``).
- ``simcse-sup``: each row is ``(premise, entailment, contradiction)``. The entailment hypothesis is the
  positive, every contradiction in the batch is an extra negative (the paper's hard negatives, with an
  optional additive logit weight on the row's own contradiction, Eq. 6 / Table D.1: 0 by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densekit.errors import ConfigError
from densekit.training.losses import LOSSES
from densekit.training.losses.infonce import cosine_scores


def temperature_cross_entropy(anchors: Tensor, candidates: Tensor, temperature: float,
                              logit_bias: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of picking candidate ``i`` for anchor ``i`` (candidate rows ``>= len(anchors)`` are
    extra negatives). ``logit_bias`` is added to the scaled cosine scores."""
    scores = cosine_scores(anchors, candidates) / temperature
    if logit_bias is not None:
        scores = scores + logit_bias
    targets = torch.arange(len(anchors), device=anchors.device)
    return F.cross_entropy(scores, targets)


class _SimCSEBase(nn.Module):
    min_columns = 2

    def __init__(self, model: nn.Module, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def _check(self, embeddings: list[Tensor]) -> None:
        if len(embeddings) < self.min_columns:
            raise ConfigError(f"{type(self).__name__} needs at least {self.min_columns} input columns, "
                              f"got {len(embeddings)}")

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @property
    def citation(self) -> str:
        return """@inproceedings{gao2021simcse,
title={SimCSE: Simple Contrastive Learning of Sentence Embeddings},
author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi}, booktitle={EMNLP}, year={2021}}"""


@LOSSES.register("simcse-unsup")
class SimCSEUnsupervisedLoss(_SimCSEBase):
    """Unsupervised SimCSE over ``(s, s)`` rows: dropout views are positives, the batch the negatives."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self._check(embeddings)
        return temperature_cross_entropy(embeddings[0], torch.cat(embeddings[1:]), self.temperature)


@LOSSES.register("simcse-sup")
class SimCSESupervisedLoss(_SimCSEBase):
    """Supervised SimCSE over ``(premise, entailment, contradiction)`` rows."""

    min_columns = 3

    def __init__(self, model: nn.Module, temperature: float = 0.05,
                 hard_negative_weight: float = 0.0) -> None:
        super().__init__(model, temperature)
        self.hard_negative_weight = hard_negative_weight

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self._check(embeddings)
        anchors = embeddings[0]
        candidates = torch.cat(embeddings[1:])
        bias = None
        if self.hard_negative_weight:
            n = len(anchors)
            bias = torch.zeros(n, len(candidates), device=anchors.device, dtype=anchors.dtype)
            own = torch.arange(n, device=anchors.device)
            for column in range(1, len(embeddings) - 1):  # each hard-negative column: the row's own one
                bias[own, column * n + own] = self.hard_negative_weight
        return temperature_cross_entropy(anchors, candidates, self.temperature, bias)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "hard_negative_weight": self.hard_negative_weight}
