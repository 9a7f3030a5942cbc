"""``--backend auto``: the fastest *exact* encoder on this machine, measured once and cached.

Which engine is fastest depends on the CPU: onnxruntime fp32 ran 1.48x sentence-transformers on one 2-core AMD
EPYC and 0.95x on another (no AVX-512, no VNNI), so nothing is assumed. The first time a model shape is seen on a
machine, each exact candidate encodes the same calibration texts (a warm-up batch, then the best of three timed
passes, the candidates taking turns so that a passing load on a shared machine does not decide); a candidate
whose embeddings are not the reference's (minimum cosine <= ``MIN_COSINE``) is not eligible.
The decision is written to ``<cache>/calibration/<machine>/<model>.json`` and reused; delete the file to measure
again (e.g. after measuring on a busy machine: the file records the load average it was measured at).

Candidates: on the CPU, ``torch`` (sentence-transformers, fp32) and ``onnx`` (onnxruntime, fp32; exported once and
cached); on a GPU, ``torch`` in fp32 and in fp16 (``model.half()``). ``onnx-int8`` (cosine ~0.995) and bf16
(~0.999) never pass the exactness bar, so they stay explicit choices.

The machine key is what the speeds depend on: the CPU model, its vector/matrix extensions, the cores this process
may use, the thread count, the torch and onnxruntime versions and the GPU's name. The model key is the model's
shape (its transformer config and sequence length, not its weights), so every checkpoint of a fine-tuning run
shares its base model's decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densekit.errors import ConfigError
from densekit.io import atomic_write_json

logger = logging.getLogger(__name__)

MIN_COSINE = 0.9999
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
_WORDS = ("the results of the randomized trial suggest that treatment with the drug reduced mortality in patients "
          "with severe disease while adverse events were rare and mostly mild in both groups of the study cohort "
          "we measured expression of the protein in cells exposed to hypoxia and found a marked increase compared "
          "with controls which indicates a role for this pathway in the response to low oxygen levels").split()


@dataclass(frozen=True)
class Choice:
    """What ``auto`` resolved to: a backend name and, for ``torch`` on a GPU, whether to run it in fp16."""

    backend: str
    fp16: bool = False


def calibration_texts(count: int = 32) -> list[str]:
    """Deterministic abstract-like texts of 20 to ~250 words (the length spread of real corpora, so padding counts)."""
    rng = np.random.default_rng(0)
    lengths = np.linspace(20, 250, count).astype(int)
    return [" ".join(rng.choice(_WORDS, size=n)) for n in rng.permutation(lengths)]


def _cpu_info() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return name, [f for f in CPU_FLAGS if f in flags]


def machine_key() -> dict:
    import torch

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    cpu, flags = _cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "flags": flags, "cores": cores, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": ort_version, "gpu": gpu}


def model_key(model) -> dict:
    first = model[0]
    config = getattr(getattr(first, "model", None), "config", None)
    shape = {k: getattr(config, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                    "num_attention_heads", "intermediate_size", "vocab_size")}
    return {**shape, "max_seq_length": model.max_seq_length, "modules": [type(m).__name__ for m in model]}


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def calibration_file(cache_dir: str | Path, machine: dict, model: dict) -> Path:
    return Path(cache_dir) / "calibration" / _digest(machine) / f"{_digest(model)}.json"


def _time_interleaved(candidates: dict, texts: list[str], batch_size: int, repeats: int
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best-of-``repeats`` seconds of each candidate, the candidates taking turns (A B A B ...), so a load that comes
    and goes on a shared machine weighs on all of them rather than on whichever ran during it."""
    for encode in candidates.values():
        encode(texts[:batch_size])  # warm-up: first-call allocations, onnxruntime's graph setup
    seconds = dict.fromkeys(candidates, float("inf"))
    embeddings: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, encode in candidates.items():
            start = time.perf_counter()
            embeddings[name] = encode(texts)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    return seconds, embeddings


def _torch_encode(model, batch_size: int):
    from densekit.models import encode

    return lambda texts: encode(model, texts, batch_size=batch_size, show_progress=False)


def _candidates(model, cache_dir: str | Path | None, batch_size: int) -> dict:
    """The exact engines to time on this device, by backend name."""
    candidates = {"torch": _torch_encode(model, batch_size)}
    if str(model.device).startswith("cuda"):
        import copy

        candidates["torch-fp16"] = _torch_encode(copy.deepcopy(model).half(), batch_size)
        return candidates
    from densekit.onnx_encoder import onnx_missing

    missing = onnx_missing()
    if missing:
        logger.info("auto backend: onnx not measured (%s not installed)", " and ".join(missing))
        return candidates
    from densekit.onnx_encoder import OnnxEncoder

    try:
        onnx = OnnxEncoder(model, cache_dir=cache_dir)
    except ConfigError as err:  # not a model onnx can run: torch is the only candidate
        logger.info("auto backend: onnx not measured (%s)", err)
        return candidates
    candidates["onnx"] = lambda texts: onnx.encode(texts, batch_size=batch_size)
    return candidates


def calibrate(model, cache_dir: str | Path | None, batch_size: int = 32, repeats: int = 3) -> dict:
    """Time each exact candidate on the calibration texts; the result, with the choice, as a JSON-able dict."""
    import torch

    texts = calibration_texts()
    seconds, embeddings = _time_interleaved(_candidates(model, cache_dir, batch_size), texts, batch_size, repeats)
    reference = embeddings["torch"]
    cosine = {name: float(np.min(np.sum(emb * reference, axis=1))) for name, emb in embeddings.items()
              if name != "torch"}
    eligible = ["torch", *[name for name, c in cosine.items() if c > MIN_COSINE]]
    choice = min(eligible, key=seconds.__getitem__)
    return {"choice": choice, "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "docs_per_second": {k: round(len(texts) / v, 1) for k, v in seconds.items()},
            "min_cosine_to_torch": {k: round(v, 7) for k, v in cosine.items()}, "min_cosine": MIN_COSINE,
            "texts": len(texts), "batch_size": batch_size, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 2), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def choose_backend(model, cache_dir: str | Path | None) -> Choice:
    """``auto`` for ``model`` (a loaded SentenceTransformer): the cached decision, or a calibration now."""
    from densekit.models import default_cache_dir

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    machine, shape = machine_key(), model_key(model)
    path = calibration_file(root, machine, shape)
    result = None
    if path.exists():
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("auto backend: unreadable calibration %s, measuring again", path)
    if result is None or result.get("choice") not in ("torch", "onnx", "torch-fp16"):
        logger.info("auto backend: measuring the exact encoders on this machine (once per machine and model)")
        result = {**calibrate(model, root), "machine": machine, "model": shape}
        try:
            atomic_write_json(path, result)
        except OSError as err:  # a read-only cache costs a calibration per run, nothing else
            logger.warning("auto backend: cannot cache the calibration at %s (%s)", path, err)
        rates = ", ".join(f"{k} {v} docs/s" for k, v in result["docs_per_second"].items())
        logger.info("auto backend: %s (%s; cached at %s)", result["choice"], rates, path)
    if result["choice"] == "torch-fp16":
        return Choice("torch", fp16=True)
    return Choice(result["choice"])
