"""``densekit train``: a thin driver over sentence-transformers' ``SentenceTransformerTrainer``.

The final model is written atomically as a sentence-transformers folder at ``--output`` (what
``SentenceTransformer(path)`` loads). Checkpoints go to ``<output>.checkpoints`` beside it; a rerun of
the same command resumes from the last one, and they are removed once the model is written.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from densekit.data.training import load_training_examples
from densekit.errors import ConfigError
from densekit.io import atomic_dir, atomic_write_json
from densekit.training.losses import LOSSES

logger = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    model: str = "all-MiniLM-L6-v2"
    data: str = ""
    output: str = "runs/model"
    loss: str = "infonce"
    loss_options: dict[str, Any] = field(default_factory=dict)
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    num_negatives: int | None = None
    max_seq_length: int | None = None
    bf16: bool = False
    seed: int = 42
    save_steps: int = 50
    logging_steps: int = 10
    resume: bool = True
    keep_checkpoints: bool = False
    data_format: str = "auto"  # auto | examples (JSONL / datasets) | text (one sentence a line) | nli-csv
    gradcache: bool = False
    mini_batch_size: int = 16
    max_train_examples: int | None = None
    # B3/NGAME-style batches from k-means clusters of the queries: a cluster count, "auto" (one per batch) or None
    cluster_batches: int | str | None = None
    # static mode: use the per-negative `weight` of a mined file (densekit mine --soft-weights) in the loss
    negative_weights: bool = False
    # training mode (densekit.training.modes): static | star | ance | adore
    mode: str = "static"
    beir: str | None = None  # BEIR folder or name: corpus + qrels of `split` (star, ance, adore)
    split: str = "train"
    cache_dir: str | None = None  # corpus embeddings (ance, adore) and teacher scores are cached here
    refresh_steps: int = 100  # ance: re-mine every N steps
    refresh_fraction: float = 1.0  # ance: share of the corpus re-encoded per refresh
    refresh_negatives: int | None = None  # ance: negatives mined per query (default: as many as trained on)
    refresh_window: tuple[int, int] = (10, 50)
    refresh_threads: int = 1
    refresh_max_seq_length: int | None = None  # document length when (re-)encoding the corpus (default: model's)
    refresh_options: dict[str, Any] = field(default_factory=dict)  # sampler, sampler_options, denoise
    refresh_command: list[str] | None = None  # the worker command (tests replace it)
    adore_depth: int = 200
    callbacks: list = field(default_factory=list)


DATA_FORMATS = ("auto", "examples", "text", "nli-csv")


def load_examples(path: str, data_format: str = "auto") -> list:
    """Training examples from a mined JSONL / datasets folder, a text file of sentences, or an NLI CSV."""
    from densekit.data import sentences

    if data_format not in DATA_FORMATS:
        raise ConfigError(f"unknown data format '{data_format}'; choose one of: {', '.join(DATA_FORMATS)}")
    if data_format == "auto":
        data_format = sentences.detect_format(path)
    if data_format == "text":
        return sentences.load_unlabeled_pairs(path)
    if data_format == "nli-csv":
        return sentences.load_nli_triplets(path)
    return load_training_examples(path)


def build_loss(name: str, model, options: dict[str, Any]):
    loss_cls = LOSSES.get(name)
    accepted = inspect.signature(loss_cls).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"loss '{name}' has no option(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(p for p in accepted if p != 'model') or 'none'}")
    return loss_cls(model, **options)


def with_gradcache(args: TrainArgs, loss):
    """The loss wrapped in GradCache when ``args.gradcache`` is set."""
    if not args.gradcache:
        return loss
    from densekit.training.gradcache import GradCacheLoss

    return GradCacheLoss(loss, mini_batch_size=args.mini_batch_size)


def build_training_loss(args: TrainArgs, model):
    return with_gradcache(args, build_loss(args.loss, model, args.loss_options))


def cluster_count(setting: int | str, n_examples: int, batch_size: int) -> int:
    if setting == "auto":
        return max(2, round(n_examples / batch_size))
    try:
        k = int(setting)
    except (TypeError, ValueError):
        raise ConfigError(f"cluster_batches must be a number of clusters or 'auto', got '{setting}'") from None
    if not 2 <= k <= n_examples:
        raise ConfigError(f"cluster_batches must be between 2 and the number of examples ({n_examples}), got {k}")
    return k


def cluster_sampler(model, dataset, setting: int | str, batch_size: int, seed: int):
    """A batch sampler factory grouping examples by k-means clusters of their queries' embeddings."""
    from densekit.training.cluster_batching import cluster_batch_sampler, cluster_examples

    k = cluster_count(setting, len(dataset), batch_size)
    embeddings = model.encode(dataset["anchor"], batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=True)
    labels, centroids = cluster_examples(embeddings, k, seed=seed)
    logger.info("cluster-grouped batches: %d clusters over %d examples", len(centroids), len(dataset))
    return cluster_batch_sampler(labels, centroids)


def train(args: TrainArgs) -> Path:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    try:
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.training_args import BatchSamplers
    from transformers.trainer_utils import get_last_checkpoint

    from densekit.models import load_model
    from densekit.training.modes import MODES

    mode = MODES.get(args.mode)
    model = load_model(args.model, max_seq_length=args.max_seq_length)
    setup = mode(args, model)
    dataset, loss = setup.dataset, setup.loss
    batch_sampler = BatchSamplers.NO_DUPLICATES
    if args.cluster_batches:
        if "anchor" not in dataset.column_names or args.mode == "adore":
            raise ConfigError("cluster_batches needs anchor/positive training pairs (not --mode adore)")
        batch_sampler = cluster_sampler(model, dataset, args.cluster_batches, args.batch_size, args.seed)

    output = Path(args.output)
    checkpoints = output.parent / f"{output.name}.checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if args.resume and checkpoints.is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        bf16=args.bf16,
        seed=args.seed,
        batch_sampler=batch_sampler,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=args.logging_steps,
        report_to="none",
        # a loss that cannot use a short last batch (WhitenedCSE: more rows than channels per group) drops it
        dataloader_drop_last=bool(getattr(loss, "needs_full_batches", False)),
        dataloader_pin_memory=False,
    )
    callbacks = [*setup.callbacks, *args.callbacks]
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                         callbacks=callbacks or None)
    if setup.wrap_collator is not None:
        trainer.data_collator = setup.wrap_collator(trainer.data_collator)
    result = trainer.train(resume_from_checkpoint=last)

    with atomic_dir(output) as tmp:
        model.save(str(tmp))
        record = {"args": {k: v for k, v in asdict(args).items() if k != "callbacks"},
                  "train_examples": setup.num_examples, "global_step": result.global_step, "resumed_from": last,
                  "train_loss": result.training_loss, "train_runtime_s": result.metrics.get("train_runtime")}
        if setup.finish is not None:
            record.update(setup.finish(output))
        atomic_write_json(tmp / "densekit_train.json", record)
    if not args.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    os.sync()
    return output
