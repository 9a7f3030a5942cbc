"""``adore``: ADORE (Zhan et al., SIGIR 2021): the documents are encoded once by a frozen copy of the starting model
into a fixed index; only the query encoder learns, against the top ``--adore-depth`` documents it retrieves at
each step (see :mod:`densekit.training.adore`). The index is written beside the model (``OUTPUT-index``)."""

from __future__ import annotations

from pathlib import Path

import datasets

from densekit.errors import ConfigError
from densekit.training.modes import ModeSetup, TrainingMode, TrainInputs, register_mode
from densekit.training.modes._common import loss_context
from densekit.training.rows import TrainingRows, rows_from_qrels


@register_mode
class AdoreMode(TrainingMode):
    name = "adore"
    default_loss = "adore"
    groups = ("adore",)
    needs_beir = True
    supports_gradcache = False
    supports_cluster_batches = False

    def check(self, config) -> None:
        super().check(config)
        if config.loss.loss not in (None, "adore"):
            raise ConfigError(f"--mode adore trains with its own loss (adore), not '{config.loss.loss}'")
        if config.data.data:
            raise ConfigError("--mode adore retrieves its own negatives: it takes --beir, not --data")

    def setup(self, inputs: TrainInputs) -> ModeSetup:
        from densekit.training.adore import AdoreLoss, fixed_index
        from densekit.training.losses.base import distributed_world

        config = inputs.config
        unknown = sorted(set(config.loss.loss_options) - {"scale", "cutoff"})
        if unknown:
            raise ConfigError(f"the adore loss has no option(s) {', '.join(unknown)}; it takes: scale, cutoff")
        rows = rows_from_qrels(inputs.beir)
        if inputs.held_out:
            rows = TrainingRows([r for r in rows.records if r.query_id not in inputs.held_out], rows.relevant)
        rows = rows.head(config.data.max_train_examples)
        index, doc_emb = fixed_index(config.model.model, inputs.beir, config.data.corpus_max_seq_length,
                                     config.data.cache_dir, config.data.corpus_backend)
        loss = AdoreLoss(inputs.model, index, doc_emb, depth=config.adore.adore_depth,
                         context=loss_context(inputs, rows=rows), **config.loss.loss_options)
        output = Path(config.model.output)
        index_dir = output.parent / f"{output.name}-index"

        def finish(model_dir: Path) -> dict:
            if distributed_world()[0] == 0:  # every rank holds the index; two writers would race for one folder
                index.meta["query_model"] = str(model_dir.resolve())
                index.save(index_dir)
            return {"adore": {"index": str(index_dir), "doc_model": config.model.model,
                              "depth": config.adore.adore_depth}}

        dataset = datasets.Dataset.from_dict({"anchor": [r.query for r in rows.records],
                                              "label": list(range(len(rows)))})
        return ModeSetup(dataset, loss, len(rows), finish=finish, rows=rows)
