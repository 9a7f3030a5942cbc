"""Training modes, registered by name (``densekit train --mode NAME``): how the batches and negatives are made.

* ``static``: the mined negatives of the training file, fixed for the whole run (the default).
* ``star``: STAR (Zhan et al. 2021): the static hard negatives plus in-batch random negatives, the pairwise
  ``star`` loss, in-batch documents relevant to the query (by the qrels of ``--beir``) masked.
* ``ance``: ANCE (Xiong et al. 2021): starts from the mined negatives; a background worker re-mines them with
  a recent checkpoint every ``refresh_steps`` and the trainer swaps them in without stopping.
* ``adore``: ADORE (Zhan et al. 2021): a fixed document index; only the query encoder learns, against the
  top-``adore_depth`` documents it retrieves at each step (LambdaRank-weighted pairwise loss).

Each mode turns ``TrainArgs`` and the model into a :class:`ModeSetup`; the trainer in ``train.py`` is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.errors import ConfigError
from densekit.registry import Registry

logger = logging.getLogger(__name__)

MODES: Registry = Registry("training mode")


@dataclass
class ModeSetup:
    dataset: Any
    loss: Any
    num_examples: int
    callbacks: list = field(default_factory=list)
    wrap_collator: Callable | None = None  # collator -> collator
    finish: Callable[[Path], dict] | None = None  # called with the written model folder; returns extra info


def _beir(args):
    from densekit.data.beir import load_beir

    if not args.beir:
        raise ConfigError(f"--mode {args.mode} needs --beir: the BEIR folder or name with the corpus and the qrels")
    return load_beir(args.beir, args.split)


def _negatives_count(args, rows) -> int:
    if args.num_negatives is not None:
        return args.num_negatives
    counts = [len(n) for n in rows.negative_ids if n]
    return min(counts) if counts else 0


@MODES.register("static")
def static_mode(args, model) -> ModeSetup:
    from densekit.data.training import to_hf_dataset
    from densekit.training.train import build_training_loss, load_examples

    if not args.data:
        raise ConfigError("train needs --data (a mined JSONL file or a datasets folder)")
    examples = load_examples(args.data, args.data_format)
    if args.max_train_examples:
        examples = examples[: args.max_train_examples]
    dataset = to_hf_dataset(examples, args.num_negatives)
    loss = build_training_loss(args, model)
    if args.negative_weights:
        dataset = attach_negative_weights(dataset, examples, loss)
    return ModeSetup(dataset, loss, len(examples))


def attach_negative_weights(dataset, examples, loss):
    """Give the loss a rows x negatives weight table and the dataset a ``label`` column (the row index)."""
    import torch

    inner = getattr(loss, "loss", loss)  # through a GradCache wrapper
    if not hasattr(inner, "negative_weights"):
        raise ConfigError(f"loss '{type(inner).__name__}' cannot use negative weights (infonce can)")
    columns = [c for c in dataset.column_names if c.startswith("negative_")]
    if not columns:
        raise ConfigError("negative weights need hard negatives in the training data")
    if not any(e.weights for e in examples):
        raise ConfigError("the training data has no per-negative 'weight' (mine with --soft-weights)")
    table = torch.ones(len(examples), len(columns))
    for r, example in enumerate(examples):
        if example.weights:
            for c in range(len(columns)):
                table[r, c] = example.weights[c % len(example.weights)]
    inner.negative_weights = table
    return dataset.add_column("label", list(range(len(examples))))


def _mined_rows(args):
    from densekit.training.dynamic_data import rows_from_mined

    if not args.data:
        raise ConfigError(f"--mode {args.mode} needs --data: a JSONL written by densekit mine")
    dataset = _beir(args)
    return dataset, rows_from_mined(args.data, dataset).head(args.max_train_examples)


@MODES.register("star")
def star_mode(args, model) -> ModeSetup:
    from densekit.training.dynamic_data import to_row_dataset
    from densekit.training.train import build_loss, with_gradcache

    _, rows = _mined_rows(args)
    n = _negatives_count(args, rows)
    loss_name = args.loss if args.loss != "infonce" else "star"
    loss = build_loss(loss_name, model, args.loss_options)
    if hasattr(loss, "rows"):
        loss.rows = rows
    return ModeSetup(to_row_dataset(rows, ("anchor", "positive"), n), with_gradcache(args, loss), len(rows))


@MODES.register("ance")
def ance_mode(args, model) -> ModeSetup:
    from dataclasses import asdict

    from densekit.data.beir import doc_text
    from densekit.mining.denoise import DenoiseConfig
    from densekit.models import load_model
    from densekit.training.ance import AnceRefresher, StepTimer
    from densekit.training.dynamic_data import DynamicNegativesCollator, NegativeStore, to_row_dataset
    from densekit.training.train import build_loss, with_gradcache

    dataset, rows = _mined_rows(args)
    n = _negatives_count(args, rows)
    if n < 1:
        raise ConfigError("--mode ance needs at least one negative per query (mine them first)")
    initial: dict[str, list[str]] = {}
    for qid, negs in zip(rows.query_ids, rows.negative_ids, strict=True):
        if negs:
            initial.setdefault(qid, negs)
    store = NegativeStore(initial)
    loss = build_loss(args.loss, model, args.loss_options)
    if hasattr(loss, "static_negatives"):
        loss.rows, loss.static_negatives = rows, False
    refresh = dict(args.refresh_options)
    denoise = DenoiseConfig(**refresh.pop("denoise", {}))
    denoise.validate()
    max_len = args.refresh_max_seq_length or load_model(args.model).max_seq_length
    job = {"data": str(dataset.path), "split": args.split, "fraction": args.refresh_fraction,
           "max_seq_length": max_len, "batch_size": 64, "threads": args.refresh_threads,
           "base_model": args.model, "cache_dir": args.cache_dir,
           "mine": {"num_negatives": args.refresh_negatives or n, "window": list(args.refresh_window),
                    "sampler": refresh.pop("sampler", "top"), "sampler_options": refresh.pop("sampler_options", {}),
                    "seed": args.seed, "denoise": asdict(denoise)}}
    if refresh:
        raise ConfigError(f"unknown refresh option(s): {', '.join(refresh)}; "
                          "known: sampler, sampler_options, denoise")
    output = Path(args.output)
    state_dir = output.parent / f"{output.name}.ance"
    refresher = AnceRefresher(store, state_dir, job, args.refresh_steps, command=args.refresh_command,
                              keep_checkpoints=args.keep_checkpoints)
    timer = StepTimer(state_dir / "step_times.jsonl", refresher)
    texts = {d: doc_text(doc) for d, doc in dataset.corpus.items()}

    def wrap(collator):
        return DynamicNegativesCollator(collator, store, rows, n, texts)

    def finish(_: Path) -> dict:
        return {"ance": {"state_dir": str(state_dir), "refreshes_started": refresher.count,
                         "swaps": refresher.swaps, "failures": refresher.failures,
                         "negatives_version": store.version}}

    return ModeSetup(to_row_dataset(rows, ("anchor", "positive")), with_gradcache(args, loss), len(rows),
                     callbacks=[refresher, timer], wrap_collator=wrap, finish=finish)


@MODES.register("adore")
def adore_mode(args, model) -> ModeSetup:
    from densekit.data.beir import doc_text
    from densekit.embeddings import encode_cached
    from densekit.models import describe_model, load_model
    from densekit.retrieval.index import DenseIndex
    from densekit.training.adore import AdoreLoss
    from densekit.training.dynamic_data import rows_from_qrels, to_row_dataset

    unknown = sorted(set(args.loss_options) - {"scale", "cutoff"})
    if unknown:
        raise ConfigError(f"the adore loss has no option(s) {', '.join(unknown)}; it takes: scale, cutoff")
    dataset = _beir(args)
    rows = rows_from_qrels(dataset).head(args.max_train_examples)
    # the document encoder is a separate, frozen copy: it encodes the corpus once and is never trained
    doc_model = load_model(args.model, max_seq_length=args.refresh_max_seq_length)
    doc_ids = list(dataset.corpus)
    doc_emb = encode_cached(doc_model, [doc_text(dataset.corpus[d]) for d in doc_ids], args.cache_dir,
                            desc="encode corpus (fixed)")
    meta = {**describe_model(args.model), "max_seq_length": doc_model.max_seq_length, "trained_by": "adore"}
    del doc_model
    index = DenseIndex.build(doc_emb, doc_ids, meta=meta)
    loss = AdoreLoss(model, index, doc_emb, rows, depth=args.adore_depth, **args.loss_options)
    output = Path(args.output)
    index_dir = output.parent / f"{output.name}-index"

    def finish(model_dir: Path) -> dict:
        index.meta["query_model"] = str(model_dir.resolve())
        index.save(index_dir)
        return {"adore": {"index": str(index_dir), "doc_model": args.model, "depth": args.adore_depth}}

    return ModeSetup(to_row_dataset(rows, ("anchor",)), loss, len(rows), finish=finish)

