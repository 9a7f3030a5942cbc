"""How a command encodes text: one set of encoder options for every command, and the encoder they load.

``backend``:

* ``auto`` (the default): the fastest of the *exact* engines on this machine (``torch`` or ``onnx`` on a CPU,
  ``torch`` in fp32 or fp16 on a GPU), measured once per machine and model shape and cached
  (:mod:`densekit.calibration`); the embeddings are the same (cosine > 0.9999) whichever it picks;
* ``torch``: the sentence-transformers model itself (optionally under bf16 autocast);
* ``onnx``: the model's transformer exported once to ONNX and run by onnxruntime, fp32 (the same embeddings);
* ``onnx-int8``: the same with int8 MatMul weights (faster, cosine ~0.995 to fp32; see
  :mod:`densekit.onnx_encoder`).

Every encoder has ``encode(texts, batch_size=..., show_progress_bar=..., normalize_embeddings=...)`` and
``get_sentence_embedding_dimension()``, so :func:`densekit.models.encode` and the embedding cache take any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from densekit.errors import ConfigError
from densekit.models import default_cache_dir, load_model
from densekit.options import option

Backend = Literal["auto", "torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "onnx-int8")


@dataclass
class EncoderOptions:
    """encoding"""

    backend: Backend = option("auto", help="how the model encodes: auto (the fastest exact engine here, measured "
                                           "once and cached), torch, onnx (fp32, the same embeddings) or onnx-int8 "
                                           "(int8 weights, cosine ~0.995)")
    batch_size: int = option(64, help="encoding batch size")
    bf16: bool = option(False, help="encode under bf16 autocast (torch backend; fast on GPUs and AMX CPUs, "
                                    "several times slower on CPUs without AMX)")
    max_seq_length: int | None = option(None, help="truncate inputs to this many tokens (default: the model's)")
    cache_dir: str = option(str(default_cache_dir()),
                            help="where corpus embeddings and ONNX exports are cached ('none' to disable)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ConfigError(f"--max-seq-length must be at least 1, got {self.max_seq_length}")
        if self.backend == "auto" and self.bf16:  # bf16 is an explicit choice of the torch engine
            self.backend = "torch"
        if self.backend != "torch" and self.bf16:
            raise ConfigError(f"--bf16 applies to the torch backend only, not to '{self.backend}'")

    @property
    def cache(self) -> str | None:
        """The cache folder, or None when caching is off."""
        return None if str(self.cache_dir).lower() == "none" else self.cache_dir

    def load(self, model: str, max_seq_length: int | None = None, device: str | None = None):
        """The encoder for ``model`` (``max_seq_length`` is the fallback when the options set none)."""
        return load_encoder(model, self.max_seq_length or max_seq_length, self.backend, self.cache, self.bf16,
                            device)


def load_encoder(name_or_path: str, max_seq_length: int | None = None, backend: str = "auto",
                 cache_dir: str | None = None, bf16: bool = False, device: str | None = None):
    """A sentence-transformers model (``torch``, on ``device``: default the first GPU, else the CPU) or an
    :class:`~densekit.onnx_encoder.OnnxEncoder` around it (CPU); ``auto`` measures which (once per machine and
    model shape, see :mod:`densekit.calibration`)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown encoder backend '{backend}'; choose from: {', '.join(BACKENDS)}")
    if backend == "auto" and bf16:
        backend = "torch"
    if backend != "torch" and bf16:
        raise ConfigError(f"bf16 applies to the torch backend only, not to '{backend}'")
    if backend == "torch":
        return load_model(name_or_path, device=device, max_seq_length=max_seq_length)
    if backend == "auto":
        from densekit.calibration import choose_backend

        model = load_model(name_or_path, device=device, max_seq_length=max_seq_length)
        choice = choose_backend(model, cache_dir)
        if choice.backend == "torch":
            return model.half() if choice.fp16 else model
        # the export is a model artifact: cached even where the embedding cache is off (it was made to calibrate)
        return _onnx(model, False, cache_dir or str(default_cache_dir()))
    from densekit.onnx_encoder import onnx_missing

    missing = onnx_missing()
    if missing:
        raise ConfigError(f"backend '{backend}' needs {' and '.join(missing)}: pip install 'densekit[onnx]'")
    return _onnx(load_model(name_or_path, device="cpu", max_seq_length=max_seq_length), backend == "onnx-int8",
                 cache_dir)


def _onnx(model, quantize: bool, cache_dir: str | None):
    from densekit.onnx_encoder import OnnxEncoder

    encoder = OnnxEncoder(model, quantize=quantize, cache_dir=cache_dir)
    encoder.release_torch_weights()
    return encoder
