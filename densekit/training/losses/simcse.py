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

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.errors import ConfigError
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext, cosine_scores, own_columns


def temperature_cross_entropy(anchors: Tensor, candidates: Tensor, temperature: float,
                              logit_bias: Tensor | None = None, offset: int = 0) -> Tensor:
    """Mean cross-entropy of picking candidate ``offset + i`` for anchor ``i`` (the other candidates are
    negatives). ``logit_bias`` is added to the scaled cosine scores."""
    scores = cosine_scores(anchors, candidates) / temperature
    if logit_bias is not None:
        scores = scores + logit_bias
    targets = offset + torch.arange(len(anchors), device=anchors.device)
    return F.cross_entropy(scores, targets)


class _SimCSEBase(DensekitLoss):
    gathers = True

    def __init__(self, model, temperature: float = 0.05, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @property
    def citation(self) -> str:
        return """@inproceedings{gao2021simcse,
title={SimCSE: Simple Contrastive Learning of Sentence Embeddings},
author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi}, booktitle={EMNLP}, year={2021}}"""


@register_loss("simcse-unsup")
class SimCSEUnsupervisedLoss(_SimCSEBase):
    """Unsupervised SimCSE over ``(s, s)`` rows: dropout views are positives, the batch the negatives.

    Inputs: columns ``(s, s)`` (the same text twice, embedded in two forward passes); no labels."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        candidates = torch.cat([self.gather(column) for column in embeddings[1:]])
        return temperature_cross_entropy(embeddings[0], candidates, self.temperature,
                                         offset=self.offset(len(embeddings[0])))


@register_loss("simcse-sup")
class SimCSESupervisedLoss(_SimCSEBase):
    """Supervised SimCSE over ``(premise, entailment, contradiction)`` rows.

    Inputs: columns ``(premise, entailment, contradiction)``; no labels."""

    min_columns = 3

    def __init__(self, model, temperature: float = 0.05, hard_negative_weight: float = 0.0, *,
                 context: LossContext | None = None) -> None:
        super().__init__(model, temperature, context=context)
        self.hard_negative_weight = hard_negative_weight

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        anchors = embeddings[0]
        n = len(anchors)
        columns = [self.gather(column) for column in embeddings[1:]]
        candidates = torch.cat(columns)
        offset = self.offset(n)
        bias = None
        if self.hard_negative_weight:  # SimCSE's additive weight on each row's own contradiction
            bias = torch.zeros(n, len(candidates), device=anchors.device, dtype=anchors.dtype)
            index = own_columns(n, len(embeddings) - 2, len(columns[0]), offset, anchors.device)
            bias.scatter_(1, index, self.hard_negative_weight)
        return temperature_cross_entropy(anchors, candidates, self.temperature, bias, offset)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "hard_negative_weight": self.hard_negative_weight}
