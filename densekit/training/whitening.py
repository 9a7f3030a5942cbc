"""Post-hoc whitening of sentence embeddings (BERT-whitening), stored inside the model folder.

Su, Cao, Liu and Ou, "Whitening Sentence Representations for Better Semantics and Faster Retrieval",
arXiv:2103.15316, 2021.

``fit_whitening(embeddings, dim)`` computes the corpus mean ``mu`` and ``W = U diag(1 / sqrt(s))`` from the
eigen-decomposition ``Sigma = U diag(s) U^T`` (eigenvalues sorted in decreasing order), keeping the first
``dim`` columns for dimension reduction. The transform is ``(x - mu) W``, stored as a built-in
sentence-transformers ``Dense`` module (identity activation) that ``add_whitening(model, ...)`` appends
(followed by a ``Normalize`` if the model ended with one): the folder written by ``model.save``
loads back with plain ``SentenceTransformer(path)``, no custom code or ``trust_remote_code``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from densekit.errors import ConfigError, DataError


def fit_whitening(embeddings: np.ndarray, dim: int | None = None,
                  eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``embeddings [n, d]`` -> ``(mu [d], W [d, dim])`` so that ``(x - mu) @ W`` has identity covariance."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"whitening needs a 2-D array of at least 2 embeddings, got shape {x.shape}")
    d = x.shape[1]
    dim = d if dim is None else dim
    if not 1 <= dim <= d:
        raise ConfigError(f"whitening dim must be in [1, {d}], got {dim}")
    mu = x.mean(axis=0)
    cov = np.cov(x - mu, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], eps, None)
    w = eigenvectors[:, order] / np.sqrt(eigenvalues)
    return mu.astype(np.float32), np.ascontiguousarray(w[:, :dim], dtype=np.float32)


def whitening_layer(mean: np.ndarray, matrix: np.ndarray):
    """A sentence-transformers ``Dense`` module computing ``(x - mean) @ matrix`` as ``x @ matrix + b``.

    A built-in module type (identity activation, weight ``matrix^T``, bias ``-mean @ matrix``) so that the
    saved folder loads with plain ``SentenceTransformer(path)``: no ``trust_remote_code``, no densekit needed.
    """
    from sentence_transformers.base.modules.dense import Dense

    mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
    matrix_t = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
    if matrix_t.ndim != 2 or mean_t.shape != (matrix_t.shape[0],):
        raise ConfigError(f"whitening shapes {tuple(mean_t.shape)} and {tuple(matrix_t.shape)} do not match")
    layer = Dense(matrix_t.shape[0], matrix_t.shape[1], bias=True, activation_function=torch.nn.Identity())
    with torch.no_grad():
        layer.linear.weight.copy_(matrix_t.T)
        layer.linear.bias.copy_(-(mean_t @ matrix_t))
    return layer


def add_whitening(model, mean: np.ndarray, matrix: np.ndarray):
    """Append the fitted whitening to the model (then a ``Normalize`` if the model ended with one).

    The whitening is fitted on what the model outputs (unit vectors when it ends with ``Normalize``), so it
    goes after the whole pipeline, and cosine-trained models keep returning unit vectors.
    """
    from sentence_transformers.base.modules.normalize import Normalize

    ends_normalized = isinstance(list(model)[-1], Normalize)
    model.append(whitening_layer(mean, matrix))
    if ends_normalized:
        model.append(Normalize())
    return model


def whitening_input(model, sentences: list[str], batch_size: int = 128, show_progress: bool = True
                    ) -> np.ndarray:
    """The embeddings the whitening is fitted on: the model's own output."""
    emb = model.encode(sentences, batch_size=batch_size, show_progress_bar=show_progress,
                       convert_to_numpy=True, normalize_embeddings=False)
    return np.asarray(emb, dtype=np.float32)


def whiten_model(model_path: str, sentences: list[str], output: str | os.PathLike, dim: int | None = None,
                 batch_size: int = 128, device: str | None = None, backend: str = "torch",
                 cache_dir: str | None = None) -> Path:
    """Fit whitening on ``sentences`` with the model at ``model_path`` and write the whitened model folder.

    ``backend`` is the engine that encodes the fit sentences (:mod:`densekit.encoders`; ``auto`` measures);
    the written folder is always the sentence-transformers model plus the whitening module."""
    import torch
    from sentence_transformers import SentenceTransformer

    from densekit.encoders import load_encoder
    from densekit.io import atomic_dir, atomic_write_json
    from densekit.models import load_model

    encoder = load_encoder(model_path, backend=backend, cache_dir=cache_dir, device=device)
    emb = whitening_input(encoder, sentences, batch_size=batch_size)
    # the fp32 torch encoder is the model to save; an ONNX one has released its torch weights, an fp16 one is not
    # what the folder should hold
    reusable = isinstance(encoder, SentenceTransformer) and next(encoder.parameters()).dtype == torch.float32
    model = encoder if reusable else load_model(model_path, device=device)
    del encoder
    mean, matrix = fit_whitening(emb, dim)
    add_whitening(model, mean, matrix)
    output = Path(output)
    with atomic_dir(output) as tmp:
        model.save(str(tmp))
        atomic_write_json(tmp / "densekit_whitening.json",
                          {"source_model": model_path, "fit_sentences": len(sentences),
                           "dim": int(matrix.shape[1])})
    return output


def read_sentences(path: str | os.PathLike, max_sentences: int | None = None) -> list[str]:
    """Sentences to fit on: a text file (one per line), or a BEIR corpus.jsonl(.gz) (title + text)."""
    from densekit.io import open_text, read_jsonl

    name = Path(path).name.lower().removesuffix(".gz")
    sentences: list[str] = []
    if name.endswith(".jsonl"):
        for lineno, obj in read_jsonl(path):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise DataError("missing or non-string", path=str(path), line=lineno, field="text")
            sentences.append(f"{obj.get('title') or ''} {text}".strip())
            if max_sentences and len(sentences) >= max_sentences:
                break
    else:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    sentences.append(line.strip())
                    if max_sentences and len(sentences) >= max_sentences:
                        break
    if len(sentences) < 2:
        raise DataError("need at least 2 sentences to fit whitening", path=str(path))
    return sentences


__all__ = ["add_whitening", "fit_whitening", "read_sentences", "whiten_model", "whitening_input",
           "whitening_layer"]
