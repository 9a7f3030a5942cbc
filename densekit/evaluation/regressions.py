"""Pinned reference scores, in the style of pyserini's ``2cr/*.yaml``: each condition names how a score is made
and the score it must give, to 4 decimals. ``tests/test_regressions.py`` checks every file in
``tests/regressions/``; the same runs are one command for anyone::

    python -m densekit.evaluation.regressions tests/regressions/scifact.yaml

A file::

    data: scifact            # BEIR folder or name (retrieval conditions)
    split: test
    conditions:
      - name: bm25-bm25s
        kind: bm25           # bm25 | dense | sts
        options: {k1: 0.9, b: 0.4}
        scores: {ndcg_at_10: 0.6762, recall_at_100: 0.9127}
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.errors import DataError

KINDS = ("bm25", "dense", "sts")


@dataclass
class Condition:
    name: str
    kind: str
    scores: dict[str, float]
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


@dataclass
class RegressionFile:
    path: Path
    conditions: list[Condition]
    data: str | None = None
    split: str = "test"


def read_regressions(path: str | Path) -> RegressionFile:
    import yaml

    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    conditions = []
    for i, item in enumerate(raw.get("conditions") or []):
        if item.get("kind") not in KINDS:
            raise DataError(f"kind must be one of {', '.join(KINDS)}", path=str(path), field=f"conditions[{i}].kind")
        if not item.get("scores"):
            raise DataError("no scores to check", path=str(path), field=f"conditions[{i}].scores")
        conditions.append(Condition(name=item["name"], kind=item["kind"], scores=dict(item["scores"]),
                                    options=dict(item.get("options") or {}), model=item.get("model")))
    return RegressionFile(path, conditions, raw.get("data"), raw.get("split", "test"))


def run_condition(condition: Condition, data: str | None, split: str) -> dict[str, float]:
    """The scores of one condition, computed by densekit's own code paths."""
    from densekit.evaluation.metrics import evaluate_run

    if condition.kind == "sts":
        from densekit.evaluation.sts import evaluate_sts

        task = condition.options.get("task", "STSBenchmark")
        return {"spearman": evaluate_sts(condition.model, [task], split=split)[task]}
    from densekit.data.beir import load_beir

    dataset = load_beir(data, split)
    if condition.kind == "bm25":
        from densekit.mining.retrievers.bm25 import BM25Retriever

        hits = BM25Retriever(**condition.options).retrieve(dataset.split_queries(), dataset.corpus, 100)
        run = {q: dict(h) for q, h in hits.items()}
    else:
        from densekit.encoders import EncoderOptions
        from densekit.evaluation.beir import corpus_searcher, searcher_run

        encoder = EncoderOptions(cache_dir="none", **condition.options)
        searcher, _ = corpus_searcher(encoder.load(condition.model), dataset, encoder.batch_size)
        run = searcher_run(searcher, dataset, 100)[0]
    return evaluate_run(dataset.qrels, run)


def check(path: str | Path) -> list[tuple[str, str, float, float]]:
    """``(condition, metric, pinned, measured)`` for every pinned score of a file."""
    regressions = read_regressions(path)
    out = []
    for condition in regressions.conditions:
        measured = run_condition(condition, regressions.data, regressions.split)
        for metric, pinned in condition.scores.items():
            out.append((condition.name, metric, float(pinned), float(measured[metric])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check pinned reference scores")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        for name, metric, pinned, measured in check(path):
            ok = round(measured, 4) == round(pinned, 4)
            failed += not ok
            print(json.dumps({"file": str(path), "condition": name, "metric": metric, "pinned": pinned,
                              "measured": round(measured, 6), "ok": ok}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
