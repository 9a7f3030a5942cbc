"""densekit eval: BEIR metrics (and AUC diagnostics), STS, MTEB tasks, and comparison reports.

- ``--data BEIR_DIR``: densekit's evaluator; writes metrics.json and run.trec (``--auc`` adds scores.npz,
  auc.json, roc.png, score_hist.png).
- ``--sts [TASK ...]``: Spearman x100 on the raw STS sets; writes sts.json.
- ``--mteb-task NAME_OR_FOLDER`` (repeatable): the real mteb package; writes MTEB result files under
  OUTPUT/results/ and OUTPUT/mteb_summary.json.
- ``--compare RUN_DIR ...``: one Markdown + HTML report over earlier eval folders (first = baseline).
"""

from __future__ import annotations

import json

from densekit.commands._common import add_encoding_arguments, cache_dir
from densekit.errors import ConfigError

NAME = "eval"
HELP = ("nDCG@10, MRR@10, Recall@100, MAP (+ ROC AUC) on a BEIR split, STS, MTEB tasks, "
        "or a report comparing runs")


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="hub name or local folder (default: the index's model)")
    p.add_argument("--index", default=None,
                   help="a saved index folder to search instead of encoding the corpus")
    p.add_argument("--data", default=None, help="BEIR folder or name for densekit's evaluator")
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, help="output folder (metrics.json, run.trec, reports, ...)")
    p.add_argument("-k", type=int, default=100, help="retrieval depth")
    p.add_argument("--auc", action="store_true",
                   help="also write ROC AUC diagnostics (auc.json, scores.npz, roc.png, score_hist.png)")
    p.add_argument("--auc-negatives", type=int, default=1000,
                   help="non-relevant documents sampled per query for the AUC")
    p.add_argument("--sts", nargs="*", default=None, metavar="TASK",
                   help="STS Spearman x100 of cosine on these tasks (default: all seven)")
    p.add_argument("--mteb-task", action="append", default=None, metavar="NAME_OR_FOLDER",
                   help="run mteb on a built-in task name or a local BEIR/STS folder (repeatable)")
    p.add_argument("--data-dir", default=None,
                   help="data folder for STS and local MTEB copies (default: $DENSEKIT_DATA)")
    p.add_argument("--compare", nargs="+", default=None, metavar="RUN_DIR",
                   help="render a report comparing these eval output folders (the first is the baseline)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="names for the --compare runs (default: folder names)")
    add_encoding_arguments(p)


def run(args) -> int:
    from pathlib import Path

    if args.compare:
        from densekit.evaluation.report import render_compare

        summary = render_compare(args.compare, args.output, labels=args.labels)
        print(json.dumps(summary["runs"], indent=2))
        print(f"report: {Path(args.output) / 'report.html'} and {Path(args.output) / 'report.md'}")
        return 0
    if not args.model and not args.index:
        raise ConfigError("give --model or --index (or --compare RUN_DIR ...)")
    if args.data is None and args.sts is None and not args.mteb_task:
        raise ConfigError("nothing to evaluate: give --data BEIR_DIR, --sts and/or --mteb-task")
    if args.index and args.data is None:
        raise ConfigError("--index needs --data (the BEIR split to evaluate)")
    if args.mteb_task:  # resolve task names before any long encoding, so a typo fails at once
        from densekit.evaluation.mteb_tasks import resolve_task

        for spec in args.mteb_task:
            resolve_task(spec, args.split, args.data_dir)
    printed: dict = {}
    if args.data is not None:
        from densekit.data.beir import load_beir
        from densekit.evaluation.beir import evaluate_model

        dataset = load_beir(args.data, args.split)
        result = evaluate_model(args.model, dataset, args.output, k=args.k, index_dir=args.index,
                                batch_size=args.batch_size, bf16=args.bf16, cache_dir=cache_dir(args),
                                max_seq_length=args.max_seq_length, auc=args.auc,
                                auc_negatives=args.auc_negatives)
        keys = ("ndcg_at_10", "mrr_at_10", "recall_at_100", "map", "num_queries", "global_auc",
                "mean_per_query_auc")
        printed["beir"] = {k: result[k] for k in keys if k in result}
        args.model = args.model or result.get("model")
    model = None
    if args.sts is not None or args.mteb_task:
        from densekit.models import load_model

        model = load_model(args.model, max_seq_length=args.max_seq_length)
    if args.sts is not None:
        from densekit.evaluation.sts import evaluate_sts
        from densekit.io import atomic_write_json

        scores = evaluate_sts(model, args.sts or None, data_dir=args.data_dir,
                              batch_size=max(args.batch_size, 128))
        atomic_write_json(Path(args.output) / "sts.json", {**scores, "model": args.model})
        printed["sts"] = scores
    if args.mteb_task:
        from densekit.evaluation.mteb_run import MtebArgs, run_mteb

        mteb_args = MtebArgs(model=args.model, tasks=args.mteb_task, output=args.output, split=args.split,
                             batch_size=args.batch_size, data_dir=args.data_dir)
        summary = run_mteb(mteb_args, model=model)
        printed["mteb"] = {name: {split: v["main_score"] for split, v in task.items() if isinstance(v, dict)
                                  and "main_score" in v} for name, task in summary["tasks"].items()}
    print(json.dumps(printed["beir"] if list(printed) == ["beir"] else printed, indent=2))
    return 0
