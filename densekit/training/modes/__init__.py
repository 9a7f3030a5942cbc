"""Training modes, registered by name (``densekit train --mode NAME``): how the batches and negatives are made.

* ``static``: the mined negatives of the training file, fixed for the whole run (the default).
* ``star``: STAR (Zhan et al. 2021): the static hard negatives plus in-batch random negatives, the pairwise
  ``star`` loss, in-batch documents relevant to the query (by the qrels of ``--beir``) masked.
* ``ance``: ANCE (Xiong et al. 2021): starts from the mined negatives; a background worker re-mines them with
  a recent checkpoint every ``--refresh-steps`` and the trainer swaps them in without stopping.
* ``adore``: ADORE (Zhan et al. 2021): a fixed document index; only the query encoder learns, against the
  top-``--adore-depth`` documents it retrieves at each step (LambdaRank-weighted pairwise loss).

A mode is one module with a :class:`TrainingMode` subclass registered in ``MODES``. It declares what it
takes (its default loss, the mode-specific option groups it reads, whether GradCache, negative weights and
cluster batches apply) and :meth:`TrainingMode.check` refuses any option it would otherwise ignore. Its
:meth:`TrainingMode.setup` turns the inputs into a :class:`ModeSetup`; the trainer (``densekit.training.train``)
is the same for every mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from densekit import options
from densekit.errors import ConfigError
from densekit.registry import Registry
from densekit.training.config import AdoreOptions, AnceOptions, TrainConfig

MODES: Registry = Registry("training mode", "densekit.training.modes")
MODE_GROUPS: tuple[str, ...] = ("ance", "adore")  # TrainConfig attributes only some modes read
_GROUP_TYPES = {"ance": AnceOptions, "adore": AdoreOptions}


@dataclass
class TrainInputs:
    """What every mode starts from; the driver loads the model and the BEIR dataset once."""

    config: TrainConfig
    model: Any  # SentenceTransformer
    beir: Any = None  # BeirDataset of --beir, or None
    held_out: frozenset[str] = frozenset()  # query ids kept back for the dev evaluator


@dataclass
class ModeSetup:
    dataset: Any  # datasets.Dataset
    loss: Any  # torch.nn.Module
    num_examples: int
    callbacks: list = field(default_factory=list)
    data_collator: Any = None  # None: sentence-transformers' own
    # called on every rank (it may gather) with the model folder; returns extra info; files: rank 0 writes them
    finish: Callable[[Path], dict] | None = None
    rows: Any = None  # TrainingRows when the mode has them


class TrainingMode:
    name: ClassVar[str]
    default_loss: ClassVar[str] = "infonce"
    groups: ClassVar[tuple[str, ...]] = ()  # which of MODE_GROUPS this mode reads
    needs_beir: ClassVar[bool] = False
    supports_gradcache: ClassVar[bool] = True
    supports_negative_weights: ClassVar[bool] = False
    supports_cluster_batches: ClassVar[bool] = True

    def loss_name(self, config: TrainConfig) -> str:
        return config.loss.loss or self.default_loss

    def check(self, config: TrainConfig) -> None:
        """Refuse every option this mode would ignore, naming it."""
        def refuse(flag: str) -> None:
            raise ConfigError(f"{flag} does not apply to --mode {self.name}")

        for group in MODE_GROUPS:
            if group not in self.groups:
                for name in options.given(getattr(config, group)):
                    field = next(f for f in options.option_fields(_GROUP_TYPES[group]) if f.name == name)
                    refuse(options.flag_of(field))
        if config.loss.gradcache and not self.supports_gradcache:
            refuse("--gradcache")
        if config.loss.negative_weights and not self.supports_negative_weights:
            refuse("--negative-weights")
        if config.batch.cluster_batches and not self.supports_cluster_batches:
            refuse("--cluster-batches")
        if self.needs_beir and not config.data.beir:
            raise ConfigError(f"--mode {self.name} needs --beir: the BEIR folder or name with the corpus and the "
                              "qrels")

    def setup(self, inputs: TrainInputs) -> ModeSetup:
        raise NotImplementedError


def get_mode(name: str) -> TrainingMode:
    return MODES.get(name)()


def register_mode(cls: type[TrainingMode]) -> type[TrainingMode]:
    return MODES.register(cls.name)(cls)
