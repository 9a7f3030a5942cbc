"""Encoding throughput: each densekit backend against sentence-transformers' ``encode``, in one run.

The same model (all-MiniLM-L6-v2), the same texts (the first ``--docs`` SciFact abstracts, title + text), the
same ``max_seq_length`` (256) and batch size; every backend encodes them once to warm up, then ``--repeats`` times
timed (the best run counts). Written to ``--out`` (JSON):

* documents/s of sentence-transformers (the peer) and of densekit's ``torch``, ``onnx``, ``onnx-int8`` (and
  ``auto`` when the encoder has it), each as a ratio to the peer, with the smallest cosine to the peer's
  embeddings;
* each as a share of this CPU's fp32 peak: the model's FLOPs per document are counted from its shape and the
  tokens actually fed (per layer and token ``24 d^2`` for the projections and the feed-forward, ``4 T d`` for
  attention over ``T`` tokens), and the peak is measured, not assumed: the best rate of a 2048^3 fp32 matrix
  product through PyTorch on the same threads (the GEMM ceiling of this machine).

    python scripts/bench/encoding.py --docs 1000 --out runs/bench/encoding.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` fp32 ``size``^3 matrix products (after a warm-up)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_flops(model, texts: list[str], max_seq_length: int) -> float:
    """Forward FLOPs of encoding ``texts``: per layer and token 24 d^2 + 4 T d, from the tokens really fed."""
    config = model[0].auto_model.config
    d, layers = config.hidden_size, config.num_hidden_layers
    lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]]
    return float(sum(layers * (24 * d * d * t + 4 * t * t * d) for t in lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--out", default="runs/bench/encoding.json")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from densekit.data.beir import doc_text, load_beir
    from densekit.encoders import BACKENDS, load_encoder
    from densekit.models import encode, resolve_model

    texts = [doc_text(d) for d in list(load_beir("scifact", None).corpus.values())[: args.docs]]
    path = resolve_model("all-MiniLM-L6-v2")
    peer = SentenceTransformer(path, device="cpu")
    peer.max_seq_length = 256
    flops = model_flops(peer, texts, 256)
    peak = gemm_peak()

    def measure(fn) -> tuple[float, np.ndarray]:
        out = fn()
        best = min(_timed(fn) for _ in range(args.repeats))
        return best, out

    seconds, reference = measure(lambda: peer.encode(texts, batch_size=args.batch_size, normalize_embeddings=True))
    rows = {"sentence-transformers": {"docs_per_second": len(texts) / seconds}}
    for backend in BACKENDS:
        encoder = load_encoder(path, 256, backend, args.cache_dir)
        seconds, emb = measure(lambda enc=encoder: encode(enc, texts, batch_size=args.batch_size,
                                                          show_progress=False))
        rows[backend] = {"docs_per_second": len(texts) / seconds,
                         "min_cosine_to_peer": float(np.min(np.sum(emb * reference, axis=1)))}
    for row in rows.values():
        row["ratio_to_peer"] = round(row["docs_per_second"] / rows["sentence-transformers"]["docs_per_second"], 3)
        row["share_of_fp32_gemm_peak"] = round(row["docs_per_second"] * flops / len(texts) / peak, 4)
        row["docs_per_second"] = round(row["docs_per_second"], 2)
    result = {"docs": len(texts), "max_seq_length": 256, "batch_size": args.batch_size,
              "gflops_per_doc": round(flops / len(texts) / 1e9, 3), "fp32_gemm_peak_gflops": round(peak / 1e9, 1),
              "cpu": platform.processor() or platform.machine(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0))
              or os.cpu_count(), "load_average": round(os.getloadavg()[0], 2), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
