"""Where the time goes: torch.profiler over one encode batch and one training step of the main job's model.

* encode: one batch of ``--batch-size`` SciFact abstracts at seq 256 through all-MiniLM-L6-v2 (tokenisation timed
  apart, then the forward under the profiler);
* train: one InfoNCE step on the main job's first ``--train-batch`` mined rows (query, positive, 2 hard
  negatives, seq 128): tokenisation, forward of the four columns, loss, backward and the AdamW step, each timed,
  the forward/backward under the profiler.

Writes ``--out`` (JSON): wall seconds per phase and the top operators by self CPU time (the share of the profiled
time each takes), so the docs can say what bounds each stage (GEMMs, attention, softmax, tokenizer, optimizer).

    python scripts/bench/profile_step.py --mined runs/scifact/mined.jsonl --out runs/bench/profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def top_ops(prof, limit: int = 12) -> list[dict]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", default="scifact")
    parser.add_argument("--mined", default="runs/scifact/mined.jsonl")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--out", default="runs/bench/profile.json")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from densekit.data.beir import doc_text, load_beir
    from densekit.data.training import read_training_records
    from densekit.models import load_model

    model = load_model(args.model, device="cpu", max_seq_length=256)
    dataset = load_beir(args.data, "test")
    texts = [doc_text(d) for d in list(dataset.corpus.values())[: args.batch_size]]
    result: dict = {"threads": torch.get_num_threads(), "model": args.model}

    model.eval()
    start = time.perf_counter()
    features = model.preprocess(texts)
    tokenize_s = time.perf_counter() - start
    with torch.no_grad():
        model(dict(features))  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            model(dict(features))
            forward_s = time.perf_counter() - start
    result["encode"] = {"docs": len(texts), "tokens_padded": int(features["input_ids"].numel()),
                        "tokens_real": int(features["attention_mask"].sum()), "tokenize_s": round(tokenize_s, 4),
                        "forward_s": round(forward_s, 4), "top_ops": top_ops(prof)}

    records = read_training_records(args.mined)[: args.train_batch]
    columns = [[r.query for r in records], [r.positive for r in records],
               *[[r.negatives[i].text for r in records] for i in range(2)]]
    model.train()
    model.max_seq_length = 128
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)

    def step() -> dict:
        timings = {}
        start = time.perf_counter()
        feats = [model.preprocess(c) for c in columns]
        timings["tokenize_s"] = time.perf_counter() - start
        start = time.perf_counter()
        emb = [model(dict(f))["sentence_embedding"] for f in feats]
        timings["forward_s"] = time.perf_counter() - start
        start = time.perf_counter()
        q = torch.nn.functional.normalize(emb[0], dim=-1)
        docs = torch.nn.functional.normalize(torch.cat(emb[1:]), dim=-1)
        loss = torch.nn.functional.cross_entropy(q @ docs.T * 20.0, torch.arange(len(q)))
        loss.backward()
        timings["loss_backward_s"] = time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        timings["optimizer_s"] = time.perf_counter() - start
        return {k: round(v, 4) for k, v in timings.items()}

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timings = step()
    result["train_step"] = {"batch": len(records), "columns": len(columns), **timings, "top_ops": top_ops(prof)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
