"""``densekit train``: a thin driver over sentence-transformers' ``SentenceTransformerTrainer``.

The mode (:mod:`densekit.training.modes`) makes the dataset, the loss, the collator and its callbacks; this
driver adds the dev evaluator, the batch sampler and the trainer settings, builds the trainer with all of them
and runs it. The final model is written atomically as a sentence-transformers folder at ``--output`` (what
``SentenceTransformer(path)`` loads), with its model card, ``densekit_train.json`` (the options and the
result), ``log_history.json`` and ``training_curves.png``. Checkpoints go to ``<output>.checkpoints``; a rerun
of the same command resumes from the last one, and they are removed once the model is written.

Under ``torchrun`` / ``accelerate launch`` every rank runs this function; rank 0 alone writes the model folder,
the other ranks wait for it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from densekit import options
from densekit.errors import ConfigError
from densekit.io import atomic_dir, atomic_write_json, atomic_write_text, ensure_writable, raise_if_disk_full
from densekit.training.config import TrainConfig
from densekit.training.modes import ModeSetup, TrainInputs, get_mode

logger = logging.getLogger(__name__)
DEV_NAME = "dev"
DEV_METRIC = f"eval_{DEV_NAME}_cosine_ndcg@10"


@dataclass
class DevSet:
    evaluator: object  # InformationRetrievalEvaluator
    held_out: frozenset[str]
    source: str


def dev_set(config: TrainConfig, beir) -> DevSet | None:
    """The dev evaluator: a BEIR split (``--dev-data``), or training queries held back (``--dev-queries``)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from densekit.data.beir import doc_text, load_beir

    dev = config.dev
    if not dev.enabled:
        return None
    held_out: frozenset[str] = frozenset()
    if dev.dev_data:
        dataset = load_beir(dev.dev_data, dev.dev_split)
        qids = sorted(dataset.qrels)
        source = f"{dev.dev_data} ({dev.dev_split})"
    else:
        if beir is None:
            raise ConfigError("--dev-queries needs --beir (the qrels and corpus of the training queries)")
        dataset = beir
        judged = sorted(q for q, docs in dataset.qrels.items() if any(r >= 1 for r in docs.values()))
        if dev.dev_queries >= len(judged):
            raise ConfigError(f"--dev-queries {dev.dev_queries} would hold back all {len(judged)} training queries")
        qids = sorted(random.Random(dev.dev_seed).sample(judged, dev.dev_queries))
        held_out = frozenset(qids)
        source = f"{dev.dev_queries} queries held back from {config.data.beir} ({config.data.split})"
    relevant = {q: {d for d, r in dataset.qrels[q].items() if r >= 1} for q in qids if q in dataset.queries}
    doc_ids = list(dataset.corpus)
    if dev.dev_max_docs is not None:
        judged_docs = {d for docs in relevant.values() for d in docs}
        others = sorted(set(doc_ids) - judged_docs)
        keep = judged_docs | set(random.Random(dev.dev_seed).sample(others, min(dev.dev_max_docs, len(others))))
        doc_ids = [d for d in doc_ids if d in keep]
    evaluator = InformationRetrievalEvaluator(
        queries={q: dataset.queries[q] for q in relevant}, corpus={d: doc_text(dataset.corpus[d]) for d in doc_ids},
        relevant_docs=relevant, name=DEV_NAME, batch_size=64, show_progress_bar=False, write_csv=False)
    return DevSet(evaluator, held_out, source)


def trainer_arguments(config: TrainConfig, setup: ModeSetup, model, dev: DevSet | None):
    """The trainer's arguments: the user's, plus what the run needs (sampler, batch size, evaluation defaults)."""
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers.trainer_utils import IntervalStrategy

    args = copy.copy(config.trainer)
    given = options.given(config.trainer)
    if config.batch.global_batch_size:
        devices = args.world_size * args.gradient_accumulation_steps
        if config.batch.global_batch_size % devices:
            raise ConfigError(f"--global-batch-size {config.batch.global_batch_size} is not a multiple of "
                              f"{args.world_size} device(s) x {args.gradient_accumulation_steps} accumulation step(s)")
        args.per_device_train_batch_size = config.batch.global_batch_size // devices
    args.batch_sampler = BatchSamplers.NO_DUPLICATES
    if config.batch.cluster_batches:
        from densekit.training.cluster_batching import cluster_sampler

        if "anchor" not in setup.dataset.column_names:
            raise ConfigError("--cluster-batches needs anchor/positive training pairs")
        batch = config.batch
        args.batch_sampler = cluster_sampler(model, setup.dataset, batch.cluster_batches,
                                             args.per_device_train_batch_size, args.seed, batch.cluster_method,
                                             batch.b3_window, batch.b3_community)
    # a loss that cannot use a short last batch (WhitenedCSE: more rows than channels per group) drops it
    args.dataloader_drop_last = args.dataloader_drop_last or setup.loss.needs_full_batches
    if dev is not None:
        if "eval_strategy" not in given:
            args.eval_strategy = IntervalStrategy.STEPS
            args.eval_steps = args.eval_steps or args.save_steps
        if "metric_for_best_model" not in given:
            args.metric_for_best_model = DEV_METRIC
            args.greater_is_better = True
        if "load_best_model_at_end" not in given:
            args.load_best_model_at_end = True
    # densekit pushes the final model folder itself (once, after it is written), not the checkpoints
    args.push_to_hub = False
    if "tensorboard" in (args.report_to or []) and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        # the trainer logs under its output_dir by default: the checkpoint folder, deleted at the end
        output = Path(config.model.output)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(output.parent / f"{output.name}.tensorboard")
    return args


@dataclass
class TrainingRun:
    """A trainer built with all its collaborators, ready to ``train``."""

    config: TrainConfig
    mode: object  # TrainingMode
    setup: ModeSetup
    dev: DevSet | None
    trainer: object  # SentenceTransformerTrainer
    resume_from: str | None


def build_trainer(config: TrainConfig, callbacks: list | None = None) -> TrainingRun:
    """The trainer for ``config``; ``callbacks`` are added to the mode's own (Hugging Face TrainerCallbacks)."""
    from sentence_transformers import SentenceTransformerTrainer

    from densekit.models import load_model
    from densekit.training.checkpoints import last_complete_checkpoint
    from densekit.training.sampler_epoch import EpochToSampler

    mode = get_mode(config.mode.mode)
    mode.check(config)
    ensure_writable(Path(config.model.output).parent)  # before any work: the model and checkpoints go there
    logger.info("%d process(es)", config.trainer.world_size)  # under torchrun this sets up torch.distributed
    model = load_model(config.model.model, max_seq_length=config.model.max_seq_length)
    beir = None
    if config.data.beir:
        from densekit.data.beir import load_beir

        beir = load_beir(config.data.beir, config.data.split)
    dev = dev_set(config, beir)
    setup = mode.setup(TrainInputs(config, model, beir, dev.held_out if dev else frozenset()))
    args = trainer_arguments(config, setup, model, dev)
    checkpoints = Path(args.output_dir)
    # the newest checkpoint that is whole (a kill while saving leaves a half-written newest one); rank 0 removes
    # the half-written ones so that the trainer never loads, rotates or overwrites them
    last = last_complete_checkpoint(checkpoints, remove_incomplete=args.process_index == 0,
                                    world_size=args.world_size) if config.model.resume else None
    if last:
        logger.info("resuming from %s", last)
    callbacks = [*setup.callbacks, *(callbacks or []), EpochToSampler()]
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=setup.dataset, loss=setup.loss,
                                         evaluator=dev.evaluator if dev else None, data_collator=setup.data_collator,
                                         callbacks=callbacks or None)
    return TrainingRun(config, mode, setup, dev, trainer, last)


def train(config: TrainConfig, callbacks: list | None = None) -> Path:
    run = build_trainer(config, callbacks)
    trainer, setup, args = run.trainer, run.setup, run.trainer.args
    try:
        result = trainer.train(resume_from_checkpoint=run.resume_from)
    except (OSError, RuntimeError) as exc:  # e.g. torch.save on a full disk: "unexpected pos 8768 vs 8660"
        raise_if_disk_full(exc, args.output_dir)
        raise
    output = Path(config.model.output)
    extra = setup.finish(output) if setup.finish is not None else {}

    if trainer.is_world_process_zero():
        record = {"options": config.record(), "mode": run.mode.name, "loss": run.mode.loss_name(config),
                  "train_examples": setup.num_examples, "global_step": result.global_step,
                  "resumed_from": run.resume_from, "train_loss": result.training_loss,
                  "train_runtime_s": result.metrics.get("train_runtime"), "world_size": args.world_size,
                  "per_device_batch_size": args.per_device_train_batch_size, **extra}
        mining = mining_settings(config.data.data)
        if mining:
            record["mining"] = mining
        if run.dev is not None:
            record["dev"] = {"source": run.dev.source, "metric": args.metric_for_best_model,
                             "best": trainer.state.best_metric, "best_checkpoint": trainer.state.best_model_checkpoint}
        write_model_folder(trainer.model, output, record, trainer.state.log_history)
        if config.trainer.push_to_hub:
            push_model_folder(trainer.model, output, config)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero() and not config.model.keep_checkpoints:
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return output


def write_model_folder(model, output: Path, record: dict, log_history: list[dict]) -> None:
    """The sentence-transformers folder, its model card with densekit's settings, the record and the curves."""
    from densekit.evaluation.report import plot_training_curves

    model.model_card_data.add_tags("densekit")
    with atomic_dir(output) as tmp:
        model.save(str(tmp))
        atomic_write_json(tmp / "densekit_train.json", record)
        atomic_write_json(tmp / "log_history.json", log_history)
        if any("loss" in entry or any(k.startswith("eval_") for k in entry) for entry in log_history):
            try:
                plot_training_curves(log_history, tmp / "training_curves.png")
            except ImportError:
                logger.warning("matplotlib is not installed: no training_curves.png (pip install 'densekit[eval]')")
        card = tmp / "README.md"
        if card.exists():
            atomic_write_text(card, card.read_text(encoding="utf-8") + model_card_section(record))


def model_card_section(record: dict) -> str:
    """What the model card adds to sentence-transformers' own: densekit's mining and training settings."""
    import yaml

    lines = ["", "## densekit", "",
             f"Trained with `densekit train --mode {record['mode']}` (loss `{record['loss']}`, "
             f"{record['train_examples']} training examples, {record['global_step']} steps).", ""]
    mining = record.get("mining")
    if mining:
        lines += ["Hard negatives mined with `densekit mine`:", "", "```yaml",
                  yaml.safe_dump(mining, sort_keys=False).rstrip(), "```", ""]
    if record.get("dev"):
        lines += [f"Dev evaluation during training: {record['dev']['source']}; best "
                  f"{record['dev']['metric']} = {record['dev']['best']}.", ""]
    lines += ["Training options (those that differ from densekit's defaults, and the trainer's main settings):", "",
              "```yaml", yaml.safe_dump(record["options"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def push_model_folder(model, output: Path, config: TrainConfig) -> str:
    """Upload the written model folder to the Hugging Face Hub (``--push-to-hub --hub-model-id ORG/NAME``)."""
    trainer = config.trainer
    repo_id = trainer.hub_model_id or output.name
    url = model.push_to_hub(repo_id, token=trainer.hub_token, private=trainer.hub_private_repo,
                            local_model_path=str(output), exist_ok=True,
                            commit_message=f"densekit train ({config.mode.mode}, {output.name})")
    logger.info("pushed %s to %s", output, url)
    return url


def mining_settings(data: str | None) -> dict | None:
    """The settings ``densekit mine`` recorded beside a mined file (``<file>.mining.json``), if any."""
    if not data:
        return None
    path = Path(f"{data}.mining.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
