"""False-negative denoising: drop mined negatives that a teacher scores too close to the positive.

Three filters, any combination (a negative must pass all that are set):

* ``absolute_margin`` m: keep if ``teacher(q, neg) <= teacher(q, pos) - m`` (sentence-transformers'
  ``absolute_margin``).
* ``perc_pos`` p: keep if ``teacher(q, neg) <= p * teacher(q, pos)``: NV-Retriever's TopK-PercPos
  (Moreira et al., "NV-Retriever: Improving text embedding models with effective hard-negative
  mining", 2024), p = 0.95 in the paper; the same as sentence-transformers' ``relative_margin=1-p``.
* ``max_score`` c: keep if ``teacher(q, neg) <= c`` (TopK-Abs).

With several positives, a query's positive score is the lowest of them (a negative that outscores
any judged positive is suspect). ``soft_weights`` additionally gives each kept negative a weight in
[0, 1] (DCLR-style, Zhou et al., ACL 2022: down-weight likely false negatives instead of trusting them
fully): 1 up to ``soft_start * pos``, falling linearly to 0 at ``pos``. Training reads ``weight``.

When the teacher itself does not believe the judged positive (its score is below
``min_positive_score``), the relative filters (``absolute_margin``, ``perc_pos``) would drop almost
everything, so they are skipped for that query and the record is flagged ``teacher_disagrees``;
``max_score`` still applies. On SciFact the ms-marco cross-encoder scores a few positives near 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from densekit.errors import ConfigError
from densekit.mining.registry import TEACHERS
from densekit.options import option

logger = logging.getLogger(__name__)


@dataclass
class DenoiseConfig:
    """false-negative denoising"""

    teacher: str | None = option(None, help="rescore candidates with: cross-encoder or bi-encoder")
    teacher_model: str | None = option(None, help="teacher model (default cross-encoder/ms-marco-MiniLM-L12-v2 "
                                                  "or sentence-transformers/all-mpnet-base-v2)")
    teacher_options: dict[str, Any] = option(default_factory=dict, flag="--teacher-option",
                                             help="teacher option, repeatable: e.g. max_seq_length=256, "
                                                  "backend=onnx")
    absolute_margin: float | None = option(None, help="drop a negative scoring above teacher(positive) - margin")
    perc_pos: float | None = option(None, help="drop a negative scoring above this fraction of teacher(positive) "
                                               "(TopK-PercPos, e.g. 0.95)")
    max_score: float | None = option(None, help="drop a negative scoring above this")
    soft_weights: bool = option(False, help="write a weight in [0, 1] per kept negative")
    soft_start: float = option(0.8, help="soft weights fall from 1 at soft_start * positive to 0 at the "
                                         "positive's score")
    min_positive_score: float | None = option(
        None, help="skip the relative filters for a query whose positive the teacher scores below this")
    # candidates kept per query before denoising, as a multiple of num_negatives, so drops can be replaced
    oversample: int = option(2, help="candidates rescored per query, as a multiple of --num-negatives")
    # a query left short of negatives after the filters is topped up from the next candidates of its window
    # (rank order, every retriever), rescored and filtered the same way, until it has enough or the window ends
    refill: bool = option(True, flag="--no-refill", help="do not top up a query that denoising left short of "
                                                           "negatives from the rest of its window")
    positive_first: bool = option(False, flag="--require-positive-first",
                                  help="keep a query only if the teacher scores its positive above every candidate "
                                       "(for pseudo-queries: the teacher confirms the source document)")

    @property
    def enabled(self) -> bool:
        return self.teacher is not None

    def validate(self) -> None:
        filters = (self.absolute_margin, self.perc_pos, self.max_score)
        if not self.enabled:
            if self.positive_first:
                raise ConfigError("--require-positive-first needs a teacher (--teacher cross-encoder or bi-encoder)")
            if any(f is not None for f in filters) or self.soft_weights:
                raise ConfigError("denoising filters (absolute_margin, perc_pos, max_score, soft_weights) "
                                  "need a teacher (--teacher cross-encoder or bi-encoder)")
            return
        TEACHERS.get(self.teacher)
        if self.perc_pos is not None and not 0.0 < self.perc_pos <= 1.0:
            raise ConfigError(f"perc_pos must be in (0, 1], got {self.perc_pos}")
        if self.absolute_margin is not None and self.absolute_margin < 0:
            raise ConfigError(f"absolute_margin must be >= 0, got {self.absolute_margin}")
        if not 0.0 <= self.soft_start < 1.0:
            raise ConfigError(f"soft_start must be in [0, 1), got {self.soft_start}")
        if self.positive_first and not self.enabled:
            raise ConfigError("--require-positive-first needs a teacher")
        if self.oversample < 1:
            raise ConfigError(f"oversample must be >= 1, got {self.oversample}")

    def build_teacher(self):
        options = dict(self.teacher_options)
        if self.teacher_model:
            options["model"] = self.teacher_model
        return TEACHERS.get(self.teacher)(**options)


def drop_reasons(neg_scores: np.ndarray, pos_score: float, absolute_margin: float | None = None,
                 perc_pos: float | None = None, max_score: float | None = None) -> list[str | None]:
    """Per negative, why it is dropped (``None`` = kept)."""
    reasons: list[str | None] = []
    for s in np.asarray(neg_scores, dtype=np.float64):
        if max_score is not None and s > max_score:
            reasons.append("max_score")
        elif absolute_margin is not None and s > pos_score - absolute_margin:
            reasons.append("absolute_margin")
        # a relative threshold is meaningless when the teacher does not score the positive above 0
        elif perc_pos is not None and pos_score > 0 and s > perc_pos * pos_score:
            reasons.append("perc_pos")
        else:
            reasons.append(None)
    return reasons


def soft_weights(neg_scores: np.ndarray, pos_score: float, soft_start: float = 0.8) -> np.ndarray:
    """1 for ``s <= soft_start * pos``, linear down to 0 at ``s = pos``; all 1 if the positive scores <= 0."""
    s = np.asarray(neg_scores, dtype=np.float64)
    if pos_score <= 0:
        return np.ones_like(s)
    return np.clip((pos_score - s) / ((1.0 - soft_start) * pos_score), 0.0, 1.0)
