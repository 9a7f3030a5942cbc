"""``densekit train``'s options, one dataclass per concern, declared once (flags, YAML keys and the Python API
come from these fields, see :mod:`densekit.options`).

The trainer's own settings are sentence-transformers' ``SentenceTransformerTrainingArguments`` (a Hugging Face
``TrainingArguments``): ``--report-to``, ``--eval-strategy``, ``--load-best-model-at-end``, ``--push-to-hub``,
``--gradient-accumulation-steps``, ``--ddp-backend`` ... keep their usual names. :class:`TrainerOptions` only
changes a few defaults and adds the short spellings densekit had (``--batch-size``, ``--epochs``, ``--lr``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformerTrainingArguments

from densekit import options
from densekit.data.training import DATA_FORMATS
from densekit.errors import ConfigError
from densekit.options import hf_option, option


@dataclass
class ModelOptions:
    """model"""

    output: str = option(help="model folder to write (a sentence-transformers folder); checkpoints go to "
                              "OUTPUT.checkpoints and a rerun resumes from them")
    model: str = option("all-MiniLM-L6-v2", help="hub name or local sentence-transformers folder to start from")
    max_seq_length: int | None = option(None, help="truncate training inputs to this many tokens")
    resume: bool = option(True, flag="--no-resume", help="ignore existing checkpoints")
    keep_checkpoints: bool = option(False, help="keep OUTPUT.checkpoints after the model is written")

    @property
    def checkpoints(self) -> Path:
        output = Path(self.output)
        return output.parent / f"{output.name}.checkpoints"


@dataclass
class DataOptions:
    """training data"""

    data: str | None = option(None, help="training JSONL (e.g. from densekit mine), a datasets folder, a .txt of "
                                         "sentences (unsupervised: each line becomes the pair (s, s)) or an NLI "
                                         ".csv (sent0,sent1,hard_neg)")
    data_format: str = option("auto", help="how to read --data: auto (by file extension), examples, text, nli-csv")
    max_train_examples: int | None = option(None, help="use only the first N examples")
    num_negatives: int | None = option(None, help="hard negatives per example (default: all)")
    beir: str | None = option(None, help="BEIR folder or name with the corpus and qrels (star, ance, adore, "
                                         "--dev-queries)")
    split: str = option("train", help="qrels split of --beir")
    cache_dir: str | None = option(None, help="cache for corpus embeddings and teacher scores (ance, adore)")
    corpus_max_seq_length: int | None = option(None, aliases=("--refresh-max-seq-length",),
                                               help="document length when encoding the corpus (ance, adore; "
                                                    "default: the model's)")
    corpus_backend: str = option("auto", help="engine that encodes the corpus (ance, adore): auto (the fastest "
                                              "exact one here, measured once), torch, onnx or onnx-int8")

    def __post_init__(self) -> None:
        from densekit.encoders import BACKENDS

        if self.corpus_backend not in BACKENDS:
            raise ConfigError(f"--corpus-backend must be one of {', '.join(BACKENDS)}, got '{self.corpus_backend}'")
        if self.data_format not in DATA_FORMATS:
            raise ConfigError(f"--data-format must be one of {', '.join(DATA_FORMATS)}, got '{self.data_format}'")
        if self.num_negatives is not None and self.num_negatives < 0:
            raise ConfigError(f"--num-negatives must be >= 0, got {self.num_negatives}")


@dataclass
class LossOptions:
    """loss"""

    loss: str | None = option(None, help="registered loss: infonce, simcse-unsup, simcse-sup, whitenedcse, mw, star, "
                                         "clusterns, listwise, margin-mse, or debcse (DebCSE-inspired: inverse-"
                                         "propensity weighting of pairs, not the paper's estimator); default: the "
                                         "mode's (infonce; star for --mode star, adore for --mode adore)")
    loss_options: dict[str, Any] = option(default_factory=dict, flag="--loss-option",
                                          help="loss option, repeatable: e.g. scale=20")
    gradcache: bool = option(False, help="GradCache: embed in mini-batches, so --batch-size (the contrastive batch) "
                                         "is not bound by memory")
    mini_batch_size: int = option(16, help="GradCache mini-batch size (memory-bound)")
    negative_weights: bool = option(False, help="weigh each hard negative by the 'weight' of the mined file "
                                                "(densekit mine --soft-weights)")
    gather_across_devices: bool = option(True, flag="--no-gather-across-devices",
                                         help="under torchrun, score each query against its own device's candidates "
                                              "only (default: against every device's, gathered with gradients)")

    def __post_init__(self) -> None:
        if self.mini_batch_size < 1:
            raise ConfigError(f"--mini-batch-size must be >= 1, got {self.mini_batch_size}")


@dataclass
class BatchOptions:
    """batches"""

    cluster_batches: str | None = option(None, metavar="N|auto",
                                         help="fill each batch from k-means clusters of the queries (B3/NGAME), so "
                                              "in-batch negatives are hard; N clusters or auto (one per batch). Pair "
                                              "with --loss-option false_negative_margin=0.1")
    cluster_method: str = option("kmeans", help="how --cluster-batches groups examples: kmeans (a nearest-centroid "
                                                "chain of k-means clusters of the queries) or b3 (B3: METIS "
                                                "communities of a preference graph that leaves out the top ranks)")
    b3_window: tuple[int, int] = option((10, 50), metavar=("START", "END"),
                                        help="b3: ranks of the other rows' positives that become graph edges "
                                             "(the ranks above START are left out as likely false negatives)")
    b3_community: int = option(8, help="b3: examples per METIS community (a batch joins batch / K of them)")
    global_batch_size: int | None = option(None, help="the batch over all devices and accumulation steps; sets "
                                                      "--batch-size to it / (devices x gradient accumulation), so "
                                                      "one config means the same optimisation on 1 or N devices")

    def __post_init__(self) -> None:
        if self.cluster_batches is not None and str(self.cluster_batches) != "auto":
            try:
                self.cluster_batches = str(int(self.cluster_batches))
            except ValueError:
                raise ConfigError("cluster_batches must be a number of clusters or 'auto', "
                                  f"got '{self.cluster_batches}'") from None
        if self.cluster_method not in ("kmeans", "b3"):
            raise ConfigError(f"--cluster-method must be kmeans or b3, got '{self.cluster_method}'")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ConfigError(f"--global-batch-size must be >= 1, got {self.global_batch_size}")


@dataclass
class ModeOptions:
    """training mode"""

    mode: str = option("static", help="static (mined negatives, default), star (static hard + in-batch random "
                                      "negatives, pairwise loss), ance (negatives re-mined during training), adore "
                                      "(query encoder only, against a fixed document index)")


@dataclass
class AnceOptions:
    """ance: negatives re-mined during training"""

    refresh_steps: int = option(100, help="re-mine negatives every N steps")
    refresh_fraction: float = option(1.0, help="share of the corpus re-encoded per refresh (a rotating slice)")
    refresh_negatives: int | None = option(None, help="negatives mined per query (default: as many as trained on)")
    refresh_window: tuple[int, int] = option((10, 50), metavar=("START", "END"),
                                             help="rank window of the re-mined negatives")
    refresh_threads: int = option(1, help="CPU threads of the refresh worker")
    refresh_sampler: str = option("top", help="sampler of the re-mined negatives")
    refresh_teacher: str | None = option(None, help="denoise refreshed negatives with this teacher "
                                                    "(cross-encoder, bi-encoder)")
    refresh_teacher_model: str | None = option(None, help="the refresh teacher's model (default: the teacher's)")
    refresh_perc_pos: float | None = option(None, help="TopK-PercPos filter of the refresh, e.g. 0.95")
    refresh_min_positive_score: float | None = option(None, help="skip the relative filter when the teacher scores "
                                                                 "the positive below this")

    def __post_init__(self) -> None:
        if self.refresh_steps < 1:
            raise ConfigError(f"--refresh-steps must be at least 1, got {self.refresh_steps}")
        if not 0.0 < self.refresh_fraction <= 1.0:
            raise ConfigError(f"--refresh-fraction must be in (0, 1], got {self.refresh_fraction}")
        if self.refresh_perc_pos is not None and not self.refresh_teacher:
            raise ConfigError("--refresh-perc-pos needs --refresh-teacher")


@dataclass
class AdoreOptions:
    """adore: the query encoder against a fixed document index"""

    adore_depth: int = option(200, help="documents retrieved per query and step")

    def __post_init__(self) -> None:
        if self.adore_depth < 1:
            raise ConfigError(f"--adore-depth must be at least 1, got {self.adore_depth}")


@dataclass
class DevOptions:
    """evaluation during training"""

    dev_data: str | None = option(None, help="BEIR folder or name evaluated during training (nDCG@10 etc. with "
                                             "sentence-transformers' InformationRetrievalEvaluator)")
    dev_split: str = option("dev", help="qrels split of --dev-data")
    dev_queries: int = option(0, help="hold back this many training queries (and all their rows) as the dev set, "
                                      "judged by the qrels of --beir; their corpus is --beir's")
    dev_seed: int = option(0, help="seed of the --dev-queries draw")
    dev_max_docs: int | None = option(None, help="evaluate against the judged documents plus this many others "
                                                 "(default: the whole corpus)")

    def __post_init__(self) -> None:
        if self.dev_queries < 0:
            raise ConfigError(f"--dev-queries must be >= 0, got {self.dev_queries}")
        if self.dev_queries and self.dev_data:
            raise ConfigError("give --dev-data or --dev-queries, not both")

    @property
    def enabled(self) -> bool:
        return bool(self.dev_data or self.dev_queries)


@dataclass
class TrainerOptions(SentenceTransformerTrainingArguments):
    """trainer (sentence-transformers / transformers TrainingArguments)"""

    per_device_train_batch_size: int = hf_option(
        32, help="examples per device and step: the contrastive batch (--global-batch-size sets it for you)",
        aliases=["--batch-size"])
    num_train_epochs: float = hf_option(1.0, help="epochs", aliases=["--epochs"])
    learning_rate: float = hf_option(2e-5, help="peak learning rate", aliases=["--lr"])
    warmup_steps: float = hf_option(0.1, help="learning-rate warm-up: a share of all steps when below 1, else a "
                                              "number of steps")
    warmup_ratio: float | None = hf_option(None, help="the share of all steps spent warming up (sets --warmup-steps)")
    weight_decay: float = hf_option(0.01, help="AdamW weight decay")
    save_steps: float = hf_option(50, help="checkpoint every N steps (a rerun resumes from the last one)")
    save_total_limit: int | None = hf_option(2, help="checkpoints kept")
    logging_steps: float = hf_option(10, help="log the loss every N steps")
    dataloader_pin_memory: bool = hf_option(False, help="pin data loader memory (only useful on GPUs)")
    output_dir: str | None = hf_option(None, help="checkpoint folder (default: OUTPUT.checkpoints)")

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = "trainer_output"  # replaced by OUTPUT.checkpoints in TrainConfig
        if self.warmup_ratio is not None:  # transformers 5 takes a ratio in warmup_steps
            self.warmup_steps, self.warmup_ratio = self.warmup_ratio, None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            # under torchrun on a machine without GPUs, the processes must join a gloo group on the CPU; left to
            # the defaults, each would silently train alone
            self.use_cpu = True
            self.ddp_backend = self.ddp_backend or "gloo"
        super().__post_init__()


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


OPTION_GROUPS: tuple[type, ...] = (ModelOptions, DataOptions, LossOptions, BatchOptions, ModeOptions, AnceOptions,
                                   AdoreOptions, DevOptions, TrainerOptions)


@dataclass
class TrainConfig:
    """Everything ``densekit train`` takes, one attribute per concern."""

    model: ModelOptions
    data: DataOptions
    loss: LossOptions
    batch: BatchOptions
    mode: ModeOptions
    ance: AnceOptions
    adore: AdoreOptions
    dev: DevOptions
    trainer: TrainerOptions

    def __post_init__(self) -> None:
        if self.trainer.output_dir in (None, "trainer_output"):
            self.trainer.output_dir = str(self.model.checkpoints)

    @classmethod
    def from_options(cls, **values: Any) -> TrainConfig:
        """Build from flat option names, as a YAML file spells them: ``TrainConfig.from_options(model=...,
        data=..., output=..., batch_size=32, max_steps=10, mode="ance", refresh_steps=5)``."""
        return cls(*options.from_mapping(OPTION_GROUPS, values))

    def groups(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    def record(self) -> dict[str, Any]:
        """What the model folder records about how it was trained: every option that differs from its default."""
        out: dict[str, Any] = {}
        for group in self.groups():
            if isinstance(group, TrainerOptions):
                continue
            out.update(options.as_dict(group))
        out["trainer"] = {k: v for k, v in options.as_dict(self.trainer).items() if k in RECORDED_TRAINER_SETTINGS}
        return out


# the trainer settings a model folder records (the rest are the trainer's own plumbing)
RECORDED_TRAINER_SETTINGS = frozenset({
    "per_device_train_batch_size", "num_train_epochs", "max_steps", "learning_rate", "warmup_ratio", "warmup_steps",
    "weight_decay", "lr_scheduler_type", "seed", "bf16", "fp16", "gradient_accumulation_steps", "save_steps",
    "report_to", "eval_strategy", "eval_steps", "load_best_model_at_end", "metric_for_best_model", "push_to_hub",
    "hub_model_id", "ddp_backend", "use_cpu"})
