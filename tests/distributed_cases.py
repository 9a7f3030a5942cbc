"""One real ``densekit train`` step per case, shared by the 2-process worker (``tests/distributed_worker.py``, run
under ``torchrun``) and the 1-process reference in ``tests/test_distributed.py``: the same tiny float64 model,
the same global batch of 8 rows (4 per rank), ids, qrels and negative weights.

Each step goes through the trainer densekit users run (``build_trainer``: sentence-transformers' Trainer,
accelerate's DistributedDataParallel, the loss with its collaborators); a callback saves every parameter's
gradient just before the optimizer step (clipping off), and the logged loss is the trainer's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

ROWS = 8  # one global batch
TOPICS = ["protein folding", "gene expression", "cell membranes", "immune response"]

CASES: dict[str, dict] = {
    "infonce": {},
    "infonce-fn-margin": {"loss_option": {"false_negative_margin": 0.05}},
    "infonce-weights": {"negative_weights": True},
    "simcse-sup": {"loss": "simcse-sup", "loss_option": {"hard_negative_weight": 0.5}},
    "debcse": {"loss": "debcse"},
    "mw": {"loss": "mw"},  # global: every positive against every negative score, across devices
    "mw-per-query": {"loss": "mw", "loss_option": {"comparison": "per_query"}},
    # each query against its own hard negatives only: nothing to gather, so gathering must change nothing
    "mw-own-hard": {"loss": "mw", "loss_option": {"in_batch_negatives": False, "comparison": "per_query"},
                    "local_equals_gathered": True},
    "listwise": {"loss": "listwise", "teacher": True},
    "star": {"mode": "star"},
    "infonce-gradcache": {"gradcache": True, "mini_batch_size": 2},
    "star-gradcache": {"mode": "star", "gradcache": True, "mini_batch_size": 2},
}


def write_data(root: Path) -> Path:
    """``train.jsonl`` (mined-style records with ids and weights) and a BEIR folder with their qrels. Queries
    q0 and q4 share their positives (each is relevant to both); row 6's hard negative is relevant to q1."""
    from tests.helpers import write_beir

    root.mkdir(parents=True, exist_ok=True)
    corpus, records = {}, []
    for i in range(ROWS):
        topic = TOPICS[i % 4]
        corpus[f"d{i}"] = {"title": "", "text": f"a report on {topic} number {i}"}
        corpus[f"n{i}"] = {"title": "", "text": f"unrelated note {i} on {TOPICS[(i + 1) % 4]}"}
        records.append({"query_id": f"q{i}", "query": f"question {i} about {topic}", "positive_id": f"d{i}",
                        "positive": corpus[f"d{i}"]["text"], "positive_teacher_score": 0.9 - 0.05 * i,
                        "negatives": [{"doc_id": f"n{i}", "text": corpus[f"n{i}"]["text"],
                                       "weight": 0.0 if i % 3 == 0 else round(1.0 / (1 + i), 6),
                                       "teacher_score": 0.1 + 0.08 * i}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(ROWS)}
    qrels["q0"]["d4"] = qrels["q4"]["d0"] = qrels["q1"]["n6"] = 1
    write_beir(root / "beir", corpus, {r["query_id"]: r["query"] for r in records}, {"train": qrels})
    return root


class GradientCapture(TrainerCallback):
    """Every parameter's gradient (averaged over ranks by DDP) just before the first optimizer step, on rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and state.is_world_process_zero:
            core = getattr(model, "module", model)
            grads = {n: p.grad.detach().cpu().numpy() for n, p in core.named_parameters() if p.grad is not None}
            np.savez(self.path, **grads)


def one_step(name: str, model_dir: str, data: Path, out: Path, world: int, gather: bool = True) -> None:
    """Train one step of case ``name`` with a global batch of 8 over ``world`` processes; rank 0 writes
    ``out/<name>-<gather|local>.npz`` (the gradients) and ``.json`` (the logged loss)."""
    from densekit.training.config import TrainConfig
    from densekit.training.train import build_trainer

    options = {k: v for k, v in CASES[name].items() if k not in ("local_equals_gathered", "teacher")}
    stem = out / f"{name}-{'gather' if gather else 'local'}"
    config = TrainConfig.from_options(
        model=model_dir, data=str(data / "train.jsonl"), beir=str(data / "beir"), output=str(stem) + ".model",
        max_steps=1, batch_size=ROWS // world, learning_rate=1e-3, max_grad_norm=0.0, warmup_ratio=0.0,
        logging_steps=1, save_steps=100, gather_across_devices=gather, **options)
    run = build_trainer(config, [GradientCapture(stem.with_suffix(".npz"))])
    run.trainer.train()
    if run.trainer.is_world_process_zero():
        loss = next(e["loss"] for e in run.trainer.state.log_history if "loss" in e)
        stem.with_suffix(".json").write_text(json.dumps({"loss": loss}))
    run.trainer.accelerator.wait_for_everyone()


def float64_model(folder: Path, minilm_path: str) -> str:
    """A 2-layer random BERT without dropout (one step is then deterministic in any number of processes),
    saved in float64."""
    from sentence_transformers import SentenceTransformer

    from densekit.models import build_random_bert

    path = build_random_bert(folder / "f32", minilm_path, layers=2, hidden=32, heads=2, intermediate=64,
                             max_position=128, max_seq_length=32, dropout=0.0)
    SentenceTransformer(path, device="cpu").double().save(str(folder / "f64"))
    return str(folder / "f64")
