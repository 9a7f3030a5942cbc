"""Run a model on MTEB tasks with the real ``mteb`` package and keep its result files.

Results land in MTEB's own layout, ``<output>/results/<model>/<revision>/<Task>.json`` (plus
``model_meta.json``), the layout of the public ``embeddings-benchmark/results`` repository, so they can be
put next to published results and read back with ``mteb.ResultCache``. A summary with the main score of
each task goes to ``<output>/mteb_summary.json``.

Naming: the packaged all-MiniLM-L6-v2 is recorded under its hub name and revision (it is that checkpoint);
any other local folder is recorded as ``local/<folder name>`` with the weights' fingerprint as the revision,
so a retrained model never picks up the stale results of an older one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from densekit.io import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class MtebArgs:
    model: str
    tasks: list[str]
    output: str
    split: str = "test"
    batch_size: int = 64
    data_dir: str | None = None
    max_seq_length: int | None = None
    encode_kwargs: dict = field(default_factory=dict)


def model_identity(name_or_path: str, model) -> tuple[str, str]:
    """(name, revision) under which MTEB files the results."""
    from densekit.models import ALIASES, PACKAGED_MODELS, model_fingerprint, resolve_model

    hub_name = ALIASES.get(name_or_path, name_or_path)
    if hub_name in PACKAGED_MODELS or not Path(resolve_model(name_or_path)).is_dir():
        import mteb

        try:
            return hub_name, str(mteb.get_model_meta(hub_name).revision or model_fingerprint(model))
        except (KeyError, ValueError):
            return hub_name, model_fingerprint(model)
    return f"local/{Path(resolve_model(name_or_path)).resolve().name}", model_fingerprint(model)


def mteb_model(model, name: str, revision: str):
    """Wrap a SentenceTransformer for mteb, under the given name and revision."""
    from mteb.models import SentenceTransformerEncoderWrapper

    wrapper = SentenceTransformerEncoderWrapper(model)
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": name, "revision": revision})
    return wrapper


def summarize(task_result) -> dict:
    """Main score and all scalar scores of the first subset of each split, from an mteb TaskResult."""
    out: dict = {}
    for split, subsets in task_result.scores.items():
        first = subsets[0]
        out[split] = {"main_score": first["main_score"], "hf_subset": first.get("hf_subset"),
                      "scores": {k: v for k, v in first.items() if isinstance(v, int | float)}}
    return out


def run_mteb(args: MtebArgs, model=None) -> dict:
    """Evaluate ``args.model`` (or an already loaded ``model``) on ``args.tasks``; returns the summary."""
    import mteb
    from mteb.cache import ResultCache

    from densekit.evaluation.mteb_tasks import resolve_task
    from densekit.models import load_model

    # resolve every task first, so a bad name fails before a model is loaded
    tasks = [resolve_task(spec, args.split, args.data_dir) for spec in args.tasks]
    if model is None:
        model = load_model(args.model, max_seq_length=args.max_seq_length)
    name, revision = model_identity(args.model, model)
    output = Path(args.output)
    start = time.perf_counter()
    result = mteb.evaluate(mteb_model(model, name, revision), tasks, cache=ResultCache(output),
                           overwrite_strategy="always",
                           encode_kwargs={"batch_size": args.batch_size, **args.encode_kwargs})
    cache = ResultCache(output)
    summary = {"model": args.model, "mteb_model_name": name, "mteb_revision": revision,
               "mteb_version": mteb.__version__, "seconds": round(time.perf_counter() - start, 1),
               "tasks": {}}
    by_name = {task_result.task_name: task_result for task_result in result.task_results}
    for spec, task in zip(args.tasks, tasks, strict=True):
        task_result = by_name[task.metadata.name]
        path = cache.get_task_result_path(task_result.task_name, name, revision)
        summary["tasks"][task_result.task_name] = {
            "spec": spec, "type": task.metadata.type, "main_score_name": task.metadata.main_score,
            "data": str(getattr(task, "local_folder", task.metadata.dataset.get("path"))),
            "result_file": str(path), **summarize(task_result)}
    atomic_write_json(output / "mteb_summary.json", summary)
    return summary
