"""``static``: the mined negatives of the training file, fixed for the whole run (the default mode)."""

from __future__ import annotations

import torch

from densekit.data.training import TrainingRecord, to_hf_dataset
from densekit.errors import ConfigError
from densekit.training.losses import LOSSES
from densekit.training.modes import ModeSetup, TrainingMode, TrainInputs, register_mode
from densekit.training.modes._common import load_records, loss_context, training_loss
from densekit.training.rows import TrainingRows, judged_relevant


def negative_weight_table(records: list[TrainingRecord], columns: int) -> torch.Tensor:
    """rows x hard-negative columns of the mined ``weight`` of each negative (1 where a record has none)."""
    if not columns:
        raise ConfigError("negative weights need hard negatives in the training data")
    if not any(r.weights for r in records):
        raise ConfigError("the training data has no per-negative 'weight' (mine with --soft-weights)")
    table = torch.ones(len(records), columns)
    for row, record in enumerate(records):
        weights = record.weights
        if weights:
            for c in range(columns):
                table[row, c] = weights[c % len(weights)]
    return table


@register_mode
class StaticMode(TrainingMode):
    name = "static"
    supports_negative_weights = True

    def setup(self, inputs: TrainInputs) -> ModeSetup:
        config = inputs.config
        records = load_records(inputs)
        weighted = config.loss.negative_weights
        # a loss that looks rows up (distillation reads each row's teacher scores) gets the records as rows
        rows = TrainingRows(records, judged_relevant(inputs.beir) if inputs.beir else {}) \
            if LOSSES.get(self.loss_name(config)).needs_rows else None
        dataset = to_hf_dataset(records, config.data.num_negatives, row_index=weighted or rows is not None)
        weights = None
        if weighted:
            columns = sum(1 for c in dataset.column_names if c.startswith("negative_"))
            weights = negative_weight_table(records, columns)
        loss = training_loss(inputs, self.loss_name(config), loss_context(inputs, negative_weights=weights, rows=rows))
        return ModeSetup(dataset, loss, len(records), rows=rows)
