"""Losses, one module each, registered into ``LOSSES``.

Every loss exposes ``compute_loss_from_embeddings(embeddings, labels)`` so that a cached
(GradCache) wrapper can compute embeddings in chunks and call it once on the whole batch.
"""

from densekit.registry import Registry

LOSSES: Registry = Registry("loss", "densekit.training.losses")
