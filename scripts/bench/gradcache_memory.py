"""Peak memory of one training step as the contrastive batch grows: GradCache vs no cache.

Each configuration runs in a fresh subprocess (so peaks do not leak between runs) that loads the model, does
a warm-up step (allocating the parameter gradients), then one measured step: forward, loss, backward. The
figure is the growth of the process's peak RSS during the measured step (``ru_maxrss`` after minus the
current RSS before): the activation memory the step needed. Compared in the same run:

- ``uncached``: densekit's loss called directly (all activations of the batch alive at once),
- ``densekit-gradcache``: ``GradCacheLoss(loss, mini_batch_size)``,
- ``st-cached-mnrl`` (the peer, for ``--loss infonce``): sentence-transformers' CachedMultipleNegativesRankingLoss.

The claim to check: with GradCache the peak stays flat as the batch grows ``4x`` (ratio near 1), while the
uncached peak grows with it. Writes JSON (``--out``)::

    python scripts/bench/gradcache_memory.py --out runs/bench/gradcache_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def current_rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def texts(n: int, words: int, offset: int) -> list[str]:
    return [" ".join(f"w{(offset + i * 7 + j) % 997}" for j in range(words)) for i in range(n)]


def child(args) -> dict:
    import torch

    from densekit.models import load_model
    from densekit.training.gradcache import GradCacheLoss
    from densekit.training.losses import LOSSES

    torch.manual_seed(0)
    model = load_model(args.model, device="cpu", max_seq_length=args.seq_len)
    model.train()
    if args.variant == "st-cached-mnrl":
        from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

        loss_fn = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.mini_batch_size)
    else:
        loss_fn = LOSSES.get(args.loss)(model)
        if args.variant == "densekit-gradcache":
            loss_fn = GradCacheLoss(loss_fn, mini_batch_size=args.mini_batch_size)

    def step(batch: int) -> None:
        anchors = texts(batch, args.seq_len, 0)
        columns = [anchors, anchors] if args.loss in ("simcse-unsup", "whitenedcse") else \
            [anchors, texts(batch, args.seq_len, 1)]
        features = [model.tokenize(c) for c in columns]
        loss = loss_fn(features, None)
        loss.backward()
        model.zero_grad(set_to_none=False)  # keep the gradient buffers: they are not what we measure

    step(2)
    before = current_rss_kb()
    started = time.perf_counter()
    step(args.batch)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": args.variant, "batch": args.batch, "step_s": round(seconds, 2),
            "peak_growth_mb": round(max(peak - before, 0) / 1024, 1), "rss_before_mb": round(before / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--loss", default="infonce")
    p.add_argument("--batches", default="16,64", help="comma-separated contrastive batch sizes")
    p.add_argument("--mini-batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--out", default="runs/bench/gradcache_memory.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="uncached", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    variants = ["uncached", "densekit-gradcache"] + (["st-cached-mnrl"] if args.loss == "infonce" else [])
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for variant in variants:
        for batch in batches:
            cmd = [sys.executable, __file__, "--child", "--variant", variant, "--batch", str(batch),
                   "--model", args.model, "--loss", args.loss, "--mini-batch-size", str(args.mini_batch_size),
                   "--seq-len", str(args.seq_len)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(rows[-1], flush=True)
    peak = {(r["variant"], r["batch"]): r["peak_growth_mb"] for r in rows}
    small, large = batches[0], batches[-1]
    summary = {v: {"peak_growth_ratio_large_vs_small": round(peak[(v, large)] / max(peak[(v, small)], 1e-9), 2)}
               for v in variants}
    if "st-cached-mnrl" in variants:
        summary["densekit_vs_st_peak_at_large_batch"] = round(
            peak[("densekit-gradcache", large)] / max(peak[("st-cached-mnrl", large)], 1e-9), 2)
    result = {"config": {k: v for k, v in vars(args).items() if k not in ("child", "variant", "batch")},
              "rows": rows, "summary": summary}
    from densekit.io import atomic_write_json

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
