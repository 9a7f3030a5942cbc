"""How good is each distillation teacher on SciFact? Each reranks the student's own top candidates, scored as a run.

A teacher can only teach what it ranks better than the student: this reranks the top ``--depth`` documents of a
first-stage run (``densekit eval``'s ``run.trec``, e.g. the zero-shot student's) with each teacher of
``scripts/distill_experiments.py`` (the same options, the same score cache) and reports nDCG@10, MRR@10 and how
often the teacher ranks a judged positive first, next to the first stage's own figures on the same lists (the same
recall ceiling). JSON to ``--out``.

    densekit eval --model all-MiniLM-L6-v2 --data runs/distill/dev/scifact-dev --split dev \\
        --output runs/distill/dev/zeroshot
    python scripts/teacher_quality.py --run runs/distill/dev/zeroshot/run.trec \\
        --data runs/distill/dev/scifact-dev --split dev --out runs/distill/dev/teachers.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_experiments import TEACHERS  # noqa: E402

from densekit.data.beir import doc_text, load_beir  # noqa: E402
from densekit.evaluation.metrics import evaluate_run, read_trec_run  # noqa: E402
from densekit.io import atomic_write_json  # noqa: E402
from densekit.mining.denoise import DenoiseConfig  # noqa: E402
from densekit.mining.teachers import score_pairs_cached  # noqa: E402
from densekit.options import parse_key_values  # noqa: E402


def teacher_config(args: list[str]) -> DenoiseConfig:
    """The ``--teacher NAME [--teacher-model M] --teacher-option k=v ...`` flags of distill_experiments."""
    name, model, options = args[1], None, []
    for flag, value in zip(args[2::2], args[3::2], strict=True):
        if flag == "--teacher-model":
            model = value
        else:
            options.append(value)
    return DenoiseConfig(teacher=name, teacher_model=model,
                         teacher_options=parse_key_values(options, "--teacher-option"))


def summary(qrels, run) -> dict:
    metrics = evaluate_run(qrels, run)
    first = sum(max(run[q], key=run[q].get) in qrels[q] for q in run if run[q]) / len(run)
    return {"ndcg_at_10": round(metrics["ndcg_at_10"], 4), "mrr_at_10": round(metrics["mrr_at_10"], 4),
            "positive_first": round(first, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="first-stage TREC run (densekit eval's run.trec)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--teachers", default=",".join(TEACHERS))
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    dataset = load_beir(args.data, args.split)
    first_stage = read_trec_run(args.run)
    lists = {q: sorted(first_stage[q], key=first_stage[q].get, reverse=True)[: args.depth]
             for q in dataset.qrels if q in first_stage}
    result = {"queries": len(lists), "depth": args.depth, "run": args.run,
              "first_stage": summary(dataset.qrels, {q: {d: first_stage[q][d] for d in docs}
                                                     for q, docs in lists.items()})}
    pairs = [(dataset.queries[q], doc_text(dataset.corpus[d])) for q, docs in lists.items() for d in docs]
    for name in args.teachers.split(","):
        scores = iter(score_pairs_cached(teacher_config(TEACHERS[name]).build_teacher(), pairs, args.cache_dir))
        reranked = {q: {d: float(next(scores)) for d in docs} for q, docs in lists.items()}
        result[name] = summary(dataset.qrels, reranked)
        print(name, result[name], flush=True)
    print("first stage", result["first_stage"])
    atomic_write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
