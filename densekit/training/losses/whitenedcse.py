"""WhitenedCSE: shuffled group whitening (SGW) of the batch, several whitened views as positives.

Zhuo et al., "WhitenedCSE: Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023
(arXiv:2305.17746).

Each row is ``(s, s)`` as in unsupervised SimCSE, so the two columns are dropout twins. For every view the
``2B x d`` batch of embeddings has its channels randomly permuted, split into ``d / group_size`` groups, and
each group is ZCA-whitened over the batch (centred, multiplied by ``Sigma^-1/2``); the permutation is then
undone. ``num_views`` different permutations give ``num_views`` whitened views of every sentence. For the
anchor view (view 0 of column 0) the positives are the same sentence in every other (column, view); the
negatives are the other sentences in every (column, view). The loss is the mean over positives of
``-log softmax`` over all of them (the multi-positive InfoNCE of the paper, Eq. 8), at temperature 0.05.

Choices where the paper leaves room (or where we deviate):

- SGW is applied to the sentence embedding itself; the paper applies it after SimCSE's MLP projection head.
  We have no head, so there is nothing to drop at inference and the model folder stays a plain encoder.
- ``Sigma^-1/2`` comes from ``torch.linalg.eigh`` in float64 on ``Sigma + eps * I`` with eigenvalues clamped
  at ``eps``; its backward pass uses the Daleckii-Krein divided differences of ``f(l) = l^-1/2`` (with
  ``f'`` where two eigenvalues are within ``1e-10``) instead of autograd through the eigenvectors, whose
  ``1 / (l_i - l_j)`` terms blow up on near-degenerate spectra.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

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


def group_whiten(x: Tensor, eps: float = 1e-5) -> Tensor:
    """ZCA-whiten the rows of ``x [n, g]`` over the batch: ``(x - mean) Sigma^-1/2``."""
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return centred @ InverseSqrtPSD.apply(cov + eps * eye, eps)


def shuffled_group_whitening(x: Tensor, group_size: int, generator: torch.Generator | None = None,
                             eps: float = 1e-5) -> Tensor:
    """One SGW view: permute the channels, whiten each group of ``group_size``, undo the permutation."""
    dim = x.shape[1]
    perm = torch.randperm(dim, generator=generator).to(x.device)
    shuffled = x[:, perm]
    groups = [group_whiten(chunk, eps) for chunk in shuffled.split(group_size, dim=1)]
    whitened = torch.cat(groups, dim=1)
    return whitened[:, torch.argsort(perm)]


def multi_positive_infonce(views: Tensor, temperature: float) -> Tensor:
    """``views [V, n, d]`` (V >= 2 views of the same n sentences): view 0 is the anchor, the same row in
    views 1.. is a positive, every other row of every view a negative."""
    num_views, n, _ = views.shape
    anchors = F.normalize(views[0], dim=-1)
    others = F.normalize(views[1:].reshape((num_views - 1) * n, -1), dim=-1)
    log_probs = torch.log_softmax(anchors @ others.T / temperature, dim=1)
    rows = torch.arange(n, device=views.device)
    positive_columns = rows.unsqueeze(1) + n * torch.arange(num_views - 1, device=views.device).unsqueeze(0)
    return -log_probs.gather(1, positive_columns).mean()


@register_loss("whitenedcse")
class WhitenedCSELoss(DensekitLoss):
    """Inputs: columns ``(s, s)`` (two dropout views); no labels. Whitening statistics are per device (as in
    the authors' code), so the loss does not gather across devices."""

    needs_full_batches = True  # the trainer drops a short last batch instead of failing on it

    def __init__(self, model, temperature: float = 0.05, num_views: int = 2, group_size: int = 64,
                 eps: float = 1e-5, include_unwhitened: bool = False, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        if num_views < 1:
            raise ConfigError(f"num_views must be >= 1, got {num_views}")
        if group_size < 2:
            raise ConfigError(f"group_size must be >= 2, got {group_size}")
        self.temperature = temperature
        self.num_views = num_views
        self.group_size = group_size
        self.eps = eps
        self.include_unwhitened = include_unwhitened

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        if len(embeddings) < 2:
            raise ConfigError("whitenedcse needs (s, s) rows: two dropout views of each sentence")
        n = len(embeddings[0])
        batch = torch.cat(embeddings[:2])  # whiten both dropout twins together, as one batch of 2n
        if n * 2 <= min(self.group_size, batch.shape[1]):
            raise ConfigError(f"whitenedcse: a batch of {n} pairs is too small to whiten groups of "
                              f"{self.group_size} channels; use a larger batch or a smaller group_size")
        views = []
        for _ in range(self.num_views):
            whitened = shuffled_group_whitening(batch, self.group_size, eps=self.eps)
            views.extend([whitened[:n], whitened[n:]])
        if self.include_unwhitened:
            views.extend(embeddings[:2])
        return multi_positive_infonce(torch.stack(views), self.temperature)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "num_views": self.num_views, "group_size": self.group_size,
                "eps": self.eps, "include_unwhitened": self.include_unwhitened}

    @property
    def citation(self) -> str:
        return """@inproceedings{zhuo2023whitenedcse,
title={WhitenedCSE: Whitening-based Contrastive Learning of Sentence Embeddings},
author={Zhuo, Wenjie and Sun, Yifan and Wang, Xiaohan and Zhu, Linchao and Yang, Yi},
booktitle={ACL}, year={2023}}"""
