"""``ance``: ANCE (Xiong et al., ICLR 2021): training starts from the mined negatives; a background worker re-mines
them with a recent checkpoint every ``--refresh-steps`` and the trainer swaps them in without stopping (see
:mod:`densekit.training.ance` and :mod:`densekit.mining.refresh`)."""

from __future__ import annotations

from pathlib import Path

from densekit.data.beir import doc_text
from densekit.data.corpus import DocStore
from densekit.data.training import to_hf_dataset
from densekit.errors import ConfigError
from densekit.mining.denoise import DenoiseConfig
from densekit.mining.refresh import RefreshJob
from densekit.training.ance import AnceRefresher, StepTimer
from densekit.training.losses import LOSSES
from densekit.training.modes import ModeSetup, TrainingMode, TrainInputs, register_mode
from densekit.training.modes._common import load_records, loss_context, negatives_count, training_loss
from densekit.training.rows import DynamicNegativesCollator, NegativeStore, rows_from_records


def refresh_job(inputs: TrainInputs, num_negatives: int) -> RefreshJob:
    config, ance = inputs.config, inputs.config.ance
    denoise = DenoiseConfig(teacher=ance.refresh_teacher, teacher_model=ance.refresh_teacher_model,
                            perc_pos=ance.refresh_perc_pos,
                            min_positive_score=ance.refresh_min_positive_score)
    denoise.validate()
    max_len = config.data.corpus_max_seq_length or inputs.model.max_seq_length
    return RefreshJob(data=str(inputs.beir.path), split=config.data.split, state_dir="", base_model=config.model.model,
                      num_negatives=ance.refresh_negatives or num_negatives, fraction=ance.refresh_fraction,
                      max_seq_length=max_len, threads=ance.refresh_threads, cache_dir=config.data.cache_dir,
                      backend=config.data.corpus_backend,
                      window=ance.refresh_window, sampler=ance.refresh_sampler, seed=config.trainer.seed,
                      denoise=denoise)


@register_mode
class AnceMode(TrainingMode):
    name = "ance"
    groups = ("ance",)
    needs_beir = True

    def setup(self, inputs: TrainInputs) -> ModeSetup:
        config = inputs.config
        rows = rows_from_records(load_records(inputs), inputs.beir)
        n = negatives_count(config.data.num_negatives, rows)
        if n < 1:
            raise ConfigError("--mode ance needs at least one negative per query (mine them first)")
        initial: dict[str, list[str]] = {}
        for record in rows.records:
            if record.negative_ids:
                initial.setdefault(record.query_id, record.negative_ids)
        store = NegativeStore(initial)
        rows.store = store  # losses look up the negatives (and teacher scores) training sees now
        if LOSSES.get(self.loss_name(config)).needs_teacher_scores and not config.ance.refresh_teacher:
            raise ConfigError(f"--loss {self.loss_name(config)} distils teacher scores: the refreshed negatives "
                              "need them too (--refresh-teacher)")
        loss = training_loss(inputs, self.loss_name(config), loss_context(inputs, rows=rows))
        output = Path(config.model.output)
        state_dir = output.parent / f"{output.name}.ance"
        refresher = AnceRefresher(store, state_dir, refresh_job(inputs, n), config.ance.refresh_steps,
                                  keep_checkpoints=config.model.keep_checkpoints)
        timer = StepTimer(state_dir / "step_times.jsonl", refresher)
        corpus = inputs.beir.corpus  # a memory-mapped corpus is looked up on demand instead of copied
        texts = corpus.texts() if isinstance(corpus, DocStore) else {d: doc_text(doc) for d, doc in corpus.items()}
        collator = DynamicNegativesCollator(preprocess_fn=inputs.model.preprocess, store=store, rows=rows,
                                            num_negatives=n, texts=texts)

        def finish(_: Path) -> dict:
            return {"ance": refresher.summary()}

        return ModeSetup(to_hf_dataset(rows.records, 0, row_index=True), loss, len(rows), callbacks=[refresher, timer],
                         data_collator=collator, finish=finish, rows=rows)
