"""Hands each epoch to the batch sampler, wherever the data loader wrappers put it.

The batch samplers (sentence-transformers' own, the cluster sampler) shuffle with ``seed + epoch``. The trainer tells
them the epoch through accelerate's wrappers, and that fails in one case: a run resumed in the middle of an epoch
other than the first under ``torchrun``. Its loader is then a ``SkipBatchSampler`` around a ``BatchSamplerShard``
around the sampler, which neither wrapper forwards ``set_epoch`` through, so the sampler shuffles with epoch 0's
order and the resumed run trains on other batches than the uninterrupted one (found by the torchrun kill trials in
``scripts/faults/crash.py``: a rerun resumed from step 15 of 24 ended 1.7e-3 away from the uninterrupted weights).
"""

from __future__ import annotations

from transformers import TrainerCallback


class EpochToSampler(TrainerCallback):
    """At each epoch's start, ``set_epoch`` on every sampler below the training data loader (accelerate's shard,
    a resumed run's batch skipper and the sampler itself), so a resumed or multi-process epoch draws the batches an
    uninterrupted one would."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch = int(state.epoch or 0)  # whole at an epoch's start; a resumed run's fraction rounds down to it
        node, depth = getattr(train_dataloader, "batch_sampler", None), 0
        while node is not None and depth < 5:
            if callable(getattr(node, "set_epoch", None)):
                node.set_epoch(epoch)
            node, depth = getattr(node, "batch_sampler", None), depth + 1
