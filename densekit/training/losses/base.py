"""The contract every densekit loss follows, written down once.

A loss is a :class:`DensekitLoss`: sentence-transformers calls ``forward(sentence_features, labels)`` with one
tokenised batch per input column; ``forward`` runs :meth:`DensekitLoss.prepare_batch` (for a loss that needs
the tokens themselves), embeds every column with ``self.model`` and hands the embeddings to
:meth:`DensekitLoss.compute_loss_from_embeddings`, where all the math is. GradCache
(:mod:`densekit.training.gradcache`) calls the same two methods, so every loss runs cached.

What a loss needs beyond its own options is declared, not probed:

=====================  =================================================================================
class attribute        meaning
=====================  =================================================================================
``min_columns``        input columns it needs (anchor, positive, ...)
``needs_full_batches``  the trainer drops a short last batch (WhitenedCSE cannot whiten a tiny one)
``needs_rows``         it looks rows up by the ``label`` column (the row index): the mode must give ``rows``
``uses_weights``       it can weigh each row's hard negatives (``densekit train --negative-weights``)
``needs_teacher_scores`` it distils the teacher scores of the mined records (and of refreshed negatives)
``gathers``            under ``torchrun`` it scores local anchors against every device's candidates
=====================  =================================================================================

Collaborators come in a :class:`LossContext` at construction; nothing is set on a loss afterwards.

Cross-device negatives: with ``context.gather_across_devices`` and an initialised process group of more than
one process, :meth:`gather` concatenates a column's embeddings from every rank with gradients
(``torch.distributed.nn.all_gather``, through sentence-transformers' ``all_gather_with_grad``), rank order, and
:meth:`offset` is where this rank's rows start in it. Every rank must hold the same number of rows (the
trainer's distributed samplers make sure of it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from densekit.errors import ConfigError


@dataclass
class LossContext:
    """What a mode hands a loss besides its options."""

    rows: Any = None  # densekit.training.rows.TrainingRows, for losses with needs_rows
    negative_weights: Tensor | None = None  # rows x hard negatives, for losses with uses_weights
    gather_across_devices: bool = True


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DensekitLoss(nn.Module):
    min_columns: int = 2
    needs_full_batches: bool = False
    needs_rows: bool = False
    uses_weights: bool = False
    needs_teacher_scores: bool = False
    gathers: bool = False

    def __init__(self, model: nn.Module, context: LossContext | None = None) -> None:
        super().__init__()
        self.model = model
        self.context = context or LossContext()
        if self.needs_rows and self.context.rows is None:
            raise ConfigError(f"loss '{self.name}' needs the training rows with their ids (a mode that reads a "
                              "mined file with --beir: star or ance)")
        if self.context.negative_weights is not None and not self.uses_weights:
            raise ConfigError(f"loss '{self.name}' cannot use negative weights (infonce can)")

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    # --- the contract ----------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        self.prepare_batch(features)
        embeddings = [self.model(f)["sentence_embedding"] for f in features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def prepare_batch(self, sentence_features: list[dict[str, Tensor]]) -> None:
        """Called with the tokenised columns before they are embedded; a loss that needs the tokens overrides it."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        return {}

    # --- helpers the losses share ----------------------------------------------------------------------------

    def check_columns(self, embeddings: list[Tensor]) -> None:
        if len(embeddings) < self.min_columns:
            raise ConfigError(f"loss '{self.name}' needs at least {self.min_columns} input columns, "
                              f"got {len(embeddings)}")

    @property
    def gathering(self) -> bool:
        """Whether this step scores against every device's candidates."""
        return self.gathers and self.context.gather_across_devices and distributed_world()[1] > 1

    def gather(self, tensor: Tensor) -> Tensor:
        """Every rank's rows of ``tensor`` (rank order), with gradients flowing back to each rank's own rows."""
        if not self.gathering:
            return tensor
        from sentence_transformers.util.distributed import all_gather_with_grad

        return all_gather_with_grad(tensor.contiguous())

    def gather_labels(self, labels: Tensor | None) -> Tensor | None:
        """Every rank's ``labels`` (no gradients), so id lookups follow the gathered candidates."""
        if labels is None or not self.gathering:
            return labels
        from sentence_transformers.util.distributed import all_gather

        return all_gather(labels.contiguous())

    def mean_over_ranks(self, local_sum: Tensor, local_count: Tensor) -> Tensor:
        """``local_sum / count`` where ``count`` is summed over every rank, times the world size: after DDP
        averages the gradients, the step equals one over the mean of all ranks' terms, even when the ranks hold
        different numbers of them (masked pairs)."""
        count = local_count.detach().float()
        if not self.gathering:
            return local_sum / count.clamp_min(1)
        import torch.distributed as dist

        dist.all_reduce(count)
        return local_sum * distributed_world()[1] / count.clamp_min(1)

    def offset(self, local_rows: int) -> int:
        """Where this rank's rows start among the gathered ones."""
        return distributed_world()[0] * local_rows if self.gathering else 0


def cosine_scores(a: Tensor, b: Tensor) -> Tensor:
    import torch.nn.functional as F

    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def own_columns(batch: int, columns: int, total: int, offset: int, device=None) -> Tensor:
    """``[batch, columns]`` candidate indices of each local anchor's own hard negatives, when the candidates are
    the gathered positives (``total`` rows) followed by each gathered hard-negative column (``total`` rows each)."""
    rows = torch.arange(batch, device=device).unsqueeze(1)
    cols = torch.arange(1, columns + 1, device=device).unsqueeze(0)
    return cols * total + offset + rows
