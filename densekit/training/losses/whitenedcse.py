"""WhitenedCSE: shuffled group whitening (SGW) in a training-only head, one InfoNCE per extra positive view.

Zhuo et al., "WhitenedCSE: Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023
(arXiv:2305.17746), as the authors' released code does it (github.com/SupstarZh/WhitenedCSE, ``models.py`` and
``shuffled_group_whitening.py``):

- Each row is ``(s, s)``; the loss adds more dropout views of ``s`` (``views``, 3 by default: the authors'
  ``num_pos 3``, an anchor and two positives) by embedding the anchor column again in ``prepare_batch``.
- Every view is whitened on its own: its channels are randomly permuted, split into ``num_groups`` groups
  (the authors use 128 groups of 768 channels, i.e. 6 channels a group; ``num_groups`` defaults to
  ``dim // 6`` for any dimension), each group is ZCA-whitened over the batch (covariance divided by the batch
  size, ``Sigma^-1/2`` from an eigendecomposition) and the permutation is undone.
- The whitening sits in a training-only projection head, before a dense layer and tanh (``dbn -> dense ->
  tanh``, the authors' MLP head with ``--mlp_only_train``): the model folder keeps the plain encoder, which is
  what is evaluated, as in the paper.
- The loss is one InfoNCE per extra positive view, anchor view against it, each with only that view's in-batch
  negatives, summed; cosine at temperature 0.05.
- As in the authors' code, no gradient flows through the whitening matrix (their covariance is re-wrapped in a
  new leaf tensor); ``detach_whitening=False`` back-propagates through it instead (a custom backward that stays
  finite for repeated eigenvalues).

Deviations: the authors' released code does not run as published (a syntax error in ``models.py``, flags the
training script does not define) and, read literally, splits the batch into thirds of *sentences* rather than of
views; we whiten each view separately, which is what the paper and the code's three-chunk structure intend.
The head's dense layer starts as the identity (the authors' is the pretrained BERT pooler, which a
sentence-transformers model does not have). Whitening statistics are per device under ``torchrun`` (no gather),
as in the authors' code.

Inputs: columns ``(s, s)``; no labels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densekit.errors import ConfigError
from densekit.training.losses import register_loss
from densekit.training.losses.base import DensekitLoss, LossContext


class InverseSqrtPSD(torch.autograd.Function):
    """``C^-1/2`` of a symmetric PSD matrix, with a backward pass that stays finite for equal eigenvalues."""

    @staticmethod
    def forward(ctx, matrix: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        sym = (matrix + matrix.transpose(-1, -2)) / 2
        eigenvalues, eigenvectors = torch.linalg.eigh(sym.double())
        eigenvalues = eigenvalues.clamp_min(eps)
        f = eigenvalues.rsqrt()
        ctx.save_for_backward(eigenvalues, eigenvectors, f)
        return ((eigenvectors * f) @ eigenvectors.transpose(-1, -2)).to(matrix.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        eigenvalues, eigenvectors, f = ctx.saved_tensors
        g = grad.double()
        g = (g + g.transpose(-1, -2)) / 2
        g_eig = eigenvectors.transpose(-1, -2) @ g @ eigenvectors
        diff_l = eigenvalues.unsqueeze(-1) - eigenvalues.unsqueeze(-2)
        diff_f = f.unsqueeze(-1) - f.unsqueeze(-2)
        derivative = -0.5 * f**3  # d/dl l^-1/2
        close = diff_l.abs() < 1e-10
        safe = torch.where(close, torch.ones_like(diff_l), diff_l)
        divided = torch.where(close, derivative.unsqueeze(-1).expand_as(diff_l), diff_f / safe)
        out = eigenvectors @ (g_eig * divided) @ eigenvectors.transpose(-1, -2)
        return out.to(grad.dtype), None


def group_whiten(x: Tensor, eps: float = 1e-5, detach: bool = True) -> Tensor:
    """ZCA-whiten the rows of ``x [n, g]`` over the batch: ``(x - mean) Sigma^-1/2``, ``Sigma`` over ``n`` rows."""
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / len(x)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    if detach:
        with torch.no_grad():
            root = InverseSqrtPSD.apply(cov + eps * eye, eps)
    else:
        root = InverseSqrtPSD.apply(cov + eps * eye, eps)
    return centred @ root


def shuffled_group_whitening(x: Tensor, num_groups: int, generator: torch.Generator | None = None,
                             eps: float = 1e-5, detach: bool = True) -> Tensor:
    """One SGW view: permute the channels, whiten each of ``num_groups`` groups, undo the permutation."""
    dim = x.shape[1]
    perm = torch.randperm(dim, generator=generator).to(x.device)
    shuffled = x[:, perm]
    groups = [group_whiten(chunk, eps, detach) for chunk in shuffled.tensor_split(num_groups, dim=1)]
    return torch.cat(groups, dim=1)[:, torch.argsort(perm)]


def view_infonce(anchors: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """InfoNCE of each anchor against the same row of one positive view, that view's other rows the negatives."""
    scores = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature
    return F.cross_entropy(scores, torch.arange(len(anchors), device=anchors.device))


@register_loss("whitenedcse")
class WhitenedCSELoss(DensekitLoss):
    needs_full_batches = True  # the trainer drops a short last batch instead of failing on it

    def __init__(self, model, temperature: float = 0.05, views: int = 3, num_groups: int | None = None,
                 head: bool = True, detach_whitening: bool = True, eps: float = 1e-5, *,
                 context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if views < 2:
            raise ConfigError(f"whitenedcse: views must be >= 2 (an anchor and a positive), got {views}")
        if num_groups is not None and num_groups < 1:
            raise ConfigError(f"whitenedcse: num_groups must be >= 1, got {num_groups}")
        self.temperature = temperature
        self.views = views
        self.num_groups = num_groups
        self.detach_whitening = detach_whitening
        self.eps = eps
        self.head = None
        if head:
            dim = embedding_dimension(model)
            self.head = nn.Linear(dim, dim)  # trained with the model (the trainer optimises the loss's parameters)
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(dim))
                self.head.bias.zero_()

    def prepare_batch(self, sentence_features: list[dict[str, Tensor]]) -> None:
        """More dropout views: the anchor column embedded again (a new dropout mask each time)."""
        while len(sentence_features) < self.views:
            sentence_features.append(dict(sentence_features[0]))

    def groups_for(self, dim: int) -> int:
        return self.num_groups or max(1, dim // 6)

    def project(self, x: Tensor) -> Tensor:
        """The training-only head: shuffled group whitening, then dense + tanh."""
        groups = self.groups_for(x.shape[1])
        if len(x) <= -(-x.shape[1] // groups):
            raise ConfigError(f"whitenedcse: a batch of {len(x)} rows is too small to whiten groups of "
                              f"{-(-x.shape[1] // groups)} channels; use a larger batch or more num_groups")
        x = shuffled_group_whitening(x, groups, eps=self.eps, detach=self.detach_whitening)
        return torch.tanh(self.head(x.to(self.head.weight.dtype))) if self.head is not None else x

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self.check_columns(embeddings)
        views = [self.project(view) for view in embeddings[: max(self.views, 2)]]
        return sum(view_infonce(views[0], view, self.temperature) for view in views[1:])

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "views": self.views, "num_groups": self.num_groups,
                "head": self.head is not None, "detach_whitening": self.detach_whitening, "eps": self.eps}

    @property
    def citation(self) -> str:
        return """@inproceedings{zhuo2023whitenedcse,
title={WhitenedCSE: Whitening-based Contrastive Learning of Sentence Embeddings},
author={Zhuo, Wenjie and Sun, Yifan and Wang, Xiaohan and Zhu, Linchao and Yang, Yi},
booktitle={ACL}, year={2023}}"""


def embedding_dimension(model) -> int:
    core = getattr(model, "module", model)
    getter = getattr(core, "get_embedding_dimension", None) or getattr(core, "get_sentence_embedding_dimension", None)
    if getter is None:
        raise ConfigError("whitenedcse's head needs the model's embedding dimension (or head=false)")
    return int(getter())
