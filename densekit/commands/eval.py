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
from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option
from densekit.vectors.options import ScaleOptions

NAME = "eval"
HELP = ("nDCG@10, MRR@10, Recall@100, MAP (+ ROC AUC) on a BEIR split, STS, MTEB tasks, "
        "or a report comparing runs")


@dataclass
class EvalOptions:
    """evaluation"""

    output: str = option(help="output folder (metrics.json, run.trec, reports, ...)")
    model: str | None = option(None, help="hub name or local folder (default: the index's model)")
    index: str | None = option(None, help="a saved index folder to search instead of encoding the corpus")
    data: str | None = option(None, help="BEIR folder or name for densekit's evaluator")
    split: str = option("test", help="qrels split")
    k: int = option(100, flag="-k", help="retrieval depth")
    auc: bool = option(False, help="also write ROC AUC diagnostics (auc.json, scores.npz, roc.png, "
                                   "score_hist.png)")
    auc_negatives: int = option(1000, help="non-relevant documents sampled per query for the AUC")
    sts: list[str] | None = option(None, nargs="*", metavar="TASK",
                                   help="STS Spearman x100 of cosine on these tasks (no task: all seven)")
    mteb_task: list[str] = option(default_factory=list, metavar="NAME_OR_FOLDER",
                                  help="run mteb on a built-in task name or a local BEIR/STS folder (repeatable)")
    data_dir: str | None = option(None, help="data folder for STS and local MTEB copies (default: $DENSEKIT_DATA)")
    compare: list[str] = option(default_factory=list, nargs="+", metavar="RUN_DIR",
                                help="render a report comparing these eval output folders (the first is the "
                                     "baseline)")
    labels: list[str] = option(default_factory=list, nargs="+", help="names for the --compare runs "
                                                                      "(default: folder names)")

    def __post_init__(self) -> None:
        if self.compare:
            return
        if not self.model and not self.index:
            raise ConfigError("give --model or --index (or --compare RUN_DIR ...)")
        if self.data is None and self.sts is None and not self.mteb_task:
            raise ConfigError("nothing to evaluate: give --data BEIR_DIR, --sts and/or --mteb-task")
        if self.index and self.data is None:
            raise ConfigError("--index needs --data (the BEIR split to evaluate)")


OPTIONS = (EvalOptions, EncoderOptions, ScaleOptions)


def run(opts: EvalOptions, encoder: EncoderOptions, scale: ScaleOptions) -> int:
    from pathlib import Path

    if opts.compare:
        from densekit.evaluation.report import render_compare

        summary = render_compare(opts.compare, opts.output, labels=opts.labels or None)
        print(json.dumps(summary["runs"], indent=2))
        print(f"report: {Path(opts.output) / 'report.html'} and {Path(opts.output) / 'report.md'}")
        return 0
    if opts.mteb_task:  # resolve task names before any long encoding, so a typo fails at once
        from densekit.evaluation.mteb_tasks import resolve_task

        for spec in opts.mteb_task:
            resolve_task(spec, opts.split, opts.data_dir)
    printed: dict = {}
    model_name = opts.model
    if opts.data is not None:
        from densekit.data.beir import load_beir
        from densekit.evaluation.beir import evaluate_model

        dataset = load_beir(opts.data, opts.split, stream=scale.stream, cache_dir=encoder.cache)
        result = evaluate_model(opts.model, dataset, opts.output, k=opts.k, index_dir=opts.index,
                                encoder=encoder, auc=opts.auc, auc_negatives=opts.auc_negatives, scale=scale)
        keys = ("ndcg_at_10", "mrr_at_10", "recall_at_100", "map", "num_queries", "global_auc",
                "mean_per_query_auc")
        printed["beir"] = {k: result[k] for k in keys if k in result}
        model_name = model_name or result.get("model")
    model = None
    if opts.sts is not None or opts.mteb_task:
        from densekit.models import load_model

        model = load_model(model_name, max_seq_length=encoder.max_seq_length)
    if opts.sts is not None:
        from densekit.evaluation.sts import evaluate_sts
        from densekit.io import atomic_write_json

        scores = evaluate_sts(model, opts.sts or None, data_dir=opts.data_dir,
                              batch_size=max(encoder.batch_size, 128))
        atomic_write_json(Path(opts.output) / "sts.json", {**scores, "model": model_name})
        printed["sts"] = scores
    if opts.mteb_task:
        from densekit.evaluation.mteb_run import MtebArgs, run_mteb

        mteb_args = MtebArgs(model=model_name, tasks=opts.mteb_task, output=opts.output, split=opts.split,
                             batch_size=encoder.batch_size, data_dir=opts.data_dir)
        summary = run_mteb(mteb_args, model=model)
        printed["mteb"] = {name: {split: v["main_score"] for split, v in task.items() if isinstance(v, dict)
                                  and "main_score" in v} for name, task in summary["tasks"].items()}
    print(json.dumps(printed["beir"] if list(printed) == ["beir"] else printed, indent=2))
    return 0
