"""``star``: STAR (Zhan et al., SIGIR 2021): the static hard negatives plus in-batch random negatives, the
pairwise ``star`` loss, in-batch documents relevant to the query (by the qrels of ``--beir``) masked."""

from __future__ import annotations

from densekit.data.training import to_hf_dataset
from densekit.training.modes import ModeSetup, TrainingMode, TrainInputs, register_mode
from densekit.training.modes._common import load_records, loss_context, negatives_count, training_loss
from densekit.training.rows import rows_from_records


@register_mode
class StarMode(TrainingMode):
    name = "star"
    default_loss = "star"
    needs_beir = True

    def setup(self, inputs: TrainInputs) -> ModeSetup:
        config = inputs.config
        rows = rows_from_records(load_records(inputs), inputs.beir)
        dataset = to_hf_dataset(rows.records, negatives_count(config.data.num_negatives, rows), row_index=True)
        loss = training_loss(inputs, self.loss_name(config), loss_context(inputs, rows=rows))
        return ModeSetup(dataset, loss, len(rows), rows=rows)
