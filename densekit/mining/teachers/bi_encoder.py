"""Bi-encoder teacher: cosine similarity from a stronger sentence-transformers model (e.g. all-mpnet-base-v2).

Cheaper than a cross-encoder (each text is encoded once, whatever the number of pairs it is in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from densekit.mining.registry import TEACHERS
from densekit.mining.teachers import resolve_teacher_model
from densekit.models import encode, model_fingerprint


@TEACHERS.register("bi-encoder")
@dataclass
class BiEncoderTeacher:
    model: str = "sentence-transformers/all-mpnet-base-v2"
    batch_size: int = 32
    max_seq_length: int | None = None
    bf16: bool = False
    name: str = "bi-encoder"
    _model: Any = field(default=None, init=False, repr=False)

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_teacher_model(self.model), device="cpu")
            if self.max_seq_length:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def fingerprint(self) -> str:
        key = f"bi|{model_fingerprint(self._load())}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        model = self._load()
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        row = {t: i for i, t in enumerate(texts)}
        emb = encode(model, texts, batch_size=self.batch_size, bf16=self.bf16, show_progress=False)
        q = emb[[row[p[0]] for p in pairs]]
        d = emb[[row[p[1]] for p in pairs]]
        return np.einsum("ij,ij->i", q, d).astype(np.float32)
