"""GradCache for any densekit loss: the contrastive batch size decoupled from activation memory.

Gao, Zhang, Han and Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
RepL4NLP 2021 (arXiv:2101.06983).

``GradCacheLoss(loss, mini_batch_size)`` wraps any :class:`~densekit.training.losses.base.DensekitLoss`:
(1) embed every column in mini-batches without a graph, saving each mini-batch's RNG state;
(2) compute the loss on the whole batch of (leaf) embeddings and back-propagate to them, caching
d loss / d embedding; (3) when the trainer calls ``backward`` on the returned loss, a hook re-embeds each
mini-batch with a graph under its saved RNG state (so dropout draws the same masks) and back-propagates
``<embedding, cached gradient>``. Only one mini-batch of activations is alive at a time.

The three steps are sentence-transformers' own ``CachedLossMixin`` (what its ``Cached*`` losses use:
``RandContext``, the backward hook, DDP handling); this wrapper only plugs our losses into it. A loss that
needs the tokenised inputs themselves (``debcse``'s surface similarity) gets them through an optional
``prepare_batch(sentence_features)`` method, called before the embeddings are computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from torch import Tensor, nn

from densekit.errors import ConfigError
from densekit.training.losses.base import DensekitLoss


class GradCacheLoss(CachedLossMixin, nn.Module):
    def __init__(self, loss: nn.Module, mini_batch_size: int = 16, show_progress_bar: bool = False) -> None:
        super().__init__()
        if not isinstance(loss, DensekitLoss):
            raise ConfigError(f"{type(loss).__name__} is not a DensekitLoss, so it cannot be cached")
        if mini_batch_size < 1:
            raise ConfigError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        if has_static_embedding_input(loss.model):
            raise ConfigError("GradCache cannot split StaticEmbedding inputs into mini-batches")
        self.loss = loss
        self.model = loss.model
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = show_progress_bar

    @property
    def needs_full_batches(self) -> bool:
        return self.loss.needs_full_batches

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = list(sentence_features)
        self.loss.prepare_batch(sentence_features)
        return self.forward_cached(sentence_features, labels)

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *,
                       with_backward: bool = False) -> Tensor:
        import torch

        embeddings = [torch.cat(column) for column in reps]
        loss = self.loss.compute_loss_from_embeddings(embeddings, labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.loss.get_config_dict(), "gradcache": True, "mini_batch_size": self.mini_batch_size}

    @property
    def citation(self) -> str:
        return """@inproceedings{gao2021gradcache,
title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
author={Gao, Luyu and Zhang, Yunyi and Han, Jiawei and Callan, Jamie}, booktitle={RepL4NLP},
year={2021}}"""
