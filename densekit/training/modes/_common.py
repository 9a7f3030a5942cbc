"""What several modes share: reading the training records and building the loss."""

from __future__ import annotations

from densekit.data.training import TrainingRecord, read_training_data
from densekit.errors import ConfigError
from densekit.training.losses import build_loss
from densekit.training.losses.base import LossContext
from densekit.training.modes import TrainInputs


def load_records(inputs: TrainInputs) -> list[TrainingRecord]:
    """The training records of ``--data`` (any format), without the held-out dev queries, cut to
    ``--max-train-examples``."""
    data = inputs.config.data
    if not data.data:
        raise ConfigError("train needs --data (a mined JSONL file, a datasets folder, a .txt or an NLI .csv)")
    records = read_training_data(data.data, data.data_format)
    if inputs.held_out:
        if any(r.query_id is None for r in records):
            raise ConfigError("--dev-queries holds back training queries by id: the training data needs query_id "
                              "(densekit mine writes it)")
        records = [r for r in records if r.query_id not in inputs.held_out]
    if data.max_train_examples:
        records = records[: data.max_train_examples]
    if not records:
        raise ConfigError(f"{data.data}: no training examples left (after --dev-queries / --max-train-examples)")
    return records


def loss_context(inputs: TrainInputs, **collaborators) -> LossContext:
    return LossContext(gather_across_devices=inputs.config.loss.gather_across_devices, **collaborators)


def training_loss(inputs: TrainInputs, name: str, context: LossContext):
    """The named loss with the user's options, wrapped in GradCache when ``--gradcache`` is set."""
    config = inputs.config.loss
    loss = build_loss(name, inputs.model, config.loss_options, context)
    if not config.gradcache:
        return loss
    from densekit.training.gradcache import GradCacheLoss

    return GradCacheLoss(loss, mini_batch_size=config.mini_batch_size)


def negatives_count(requested: int | None, rows) -> int:
    """``--num-negatives``, or the fewest negatives any row has."""
    if requested is not None:
        return requested
    counts = [len(r.negatives) for r in rows.records if r.negatives]
    return min(counts) if counts else 0
