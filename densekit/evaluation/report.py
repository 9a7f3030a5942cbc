"""Plots and the comparison report of ``densekit eval --compare RUN_DIR ...``.

A run folder is what ``densekit eval`` writes: ``metrics.json`` and ``run.trec``, and with ``--auc`` also
``scores.npz``/``auc.json``; ``sts.json`` and ``mteb_summary.json`` are picked up when present. The first
run is the baseline. The report has a metrics table (with the change against the baseline), per-query
wins/losses in nDCG@10, and the plots: ROC curves, score histograms and per-query nDCG@10 differences.
It is written as ``report.md`` (PNG files beside it) and ``report.html`` (images embedded, one file).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from densekit.errors import DataError
from densekit.io import atomic_open, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

TABLE_METRICS = ["ndcg_at_10", "mrr_at_10", "recall_at_100", "map", "global_auc", "mean_per_query_auc"]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10})
    return plt


def _save(fig, path: str | Path) -> Path:
    """Lay out, write the PNG atomically and free the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path:
    """The training loss by step (left) and every dev metric the trainer logged by step (right)."""
    plt = _pyplot()
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    metrics: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("eval_") and key.endswith(("ndcg@10", "mrr@10", "recall@10", "map@100")) \
                    and isinstance(value, int | float):
                metrics.setdefault(key[len("eval_"):], []).append((entry["step"], value))
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4), squeeze=False)
    ax = axes[0][0]
    if losses:
        ax.plot(*zip(*losses, strict=True), marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("loss")
    if metrics:
        ax = axes[0][1]
        for name, points in sorted(metrics.items()):
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("dev score")
        ax.set_title("dev evaluation")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_roc(samples_by_label: dict, path: str | Path) -> Path:
    """ROC curves of pooled (global) scores, one line per run, AUC in the legend. The right panel has a
    log false-positive axis: with thousands of non-relevant documents per query, the low-FPR end is
    where retrievers differ."""
    from densekit.evaluation.auc import roc_auc, roc_curve

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    min_fpr = 1.0
    for i, (label, samples) in enumerate(samples_by_label.items()):
        pos, neg = samples.pooled()
        if len(pos) == 0 or len(neg) == 0:
            continue
        fpr, tpr = roc_curve(pos, neg)
        min_fpr = min(min_fpr, 1.0 / len(neg))
        suffix = " (top-k only)" if samples.source == "run top-k" else ""
        for ax in axes:
            ax.plot(fpr, tpr, color=COLORS[i % len(COLORS)], lw=2,
                    label=f"{label}: AUC {roc_auc(pos, neg):.3f}{suffix}")
    grid = np.linspace(0, 1, 200)
    axes[0].plot(grid, grid, color="grey", lw=1, ls="--", label="chance")
    axes[0].set(xlim=(0, 1), ylim=(0, 1.01), title="Global ROC (all queries pooled)")
    axes[1].plot(grid[1:], grid[1:], color="grey", lw=1, ls="--", label="chance")
    axes[1].set_xscale("log")
    axes[1].set(xlim=(max(min_fpr, 1e-6), 1), ylim=(0, 1.01), title="Same, log false positive rate")
    for ax in axes:
        ax.set(xlabel="false positive rate (non-relevant pairs above threshold)",
               ylabel="true positive rate (relevant pairs above threshold)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_score_histograms(samples_by_label: dict, path: str | Path) -> Path:
    """One panel per run: density histograms of relevant and non-relevant scores (bins per run, since
    score scales differ between models, e.g. BM25 vs cosine)."""
    plt = _pyplot()
    n = len(samples_by_label)
    fig, axes = plt.subplots(n, 1, figsize=(7, 3.2 * n), squeeze=False)
    pooled = {label: s.pooled() for label, s in samples_by_label.items()}
    for ax, (label, (pos, neg)) in zip(axes[:, 0], pooled.items(), strict=True):
        values = np.concatenate([pos, neg]) if len(pos) + len(neg) else np.zeros(1)
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-6, 60)
        ax.hist(neg, bins=bins, density=True, alpha=0.55, color="#7f7f7f",
                label=f"non-relevant (n={len(neg):,})")
        ax.hist(pos, bins=bins, density=True, alpha=0.65, color="#d62728", label=f"relevant (n={len(pos):,})")
        source = samples_by_label[label].source
        ax.set(title=f"{label}: score distribution ({source})", xlabel="score", ylabel="density")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    return _save(fig, path)


def plot_per_query_delta(baseline: dict[str, float], other: dict[str, float], labels: tuple[str, str],
                         path: str | Path) -> Path:
    """Sorted per-query nDCG@10 change of ``other`` against ``baseline`` (bars above zero = better)."""
    plt = _pyplot()
    qids = sorted(set(baseline) & set(other))
    delta = np.sort(np.array([other[q] - baseline[q] for q in qids]))[::-1]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = np.where(delta > 0, "#2ca02c", np.where(delta < 0, "#d62728", "#7f7f7f"))
    ax.bar(np.arange(len(delta)), delta, width=1.0, color=colors)
    ax.axhline(0, color="black", lw=0.8)
    wins, losses = int((delta > 0).sum()), int((delta < 0).sum())
    same = len(delta) - wins - losses
    ax.set(xlabel="queries, sorted by change", ylabel="nDCG@10 change",
           title=f"{labels[1]} vs {labels[0]}: {wins} better, {losses} worse, {same} same")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


@dataclass
class RunInfo:
    label: str
    folder: Path
    metrics: dict
    per_query_ndcg: dict[str, float] = field(default_factory=dict)
    samples: object | None = None
    extras: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None


def load_run_folder(folder: str | Path, label: str | None = None) -> RunInfo:
    """Metrics, per-query nDCG@10 and score samples of one ``densekit eval`` output folder."""
    from densekit.data.beir import load_qrels
    from densekit.evaluation.auc import ScoreSamples, samples_from_run
    from densekit.evaluation.metrics import evaluate_run, read_trec_run

    folder = Path(folder)
    if not (folder / "metrics.json").exists():
        raise DataError("not a densekit eval folder: no metrics.json", path=str(folder))
    metrics = _read_json(folder / "metrics.json")
    info = RunInfo(label=label or folder.name, folder=folder, metrics=metrics)
    if (folder / "auc.json").exists():
        auc = _read_json(folder / "auc.json")
        info.metrics = {**{k: v for k, v in auc.items() if k != "per_query_auc"}, **metrics}
    qrels_path = Path(str(metrics.get("dataset", ""))) / "qrels" / f"{metrics.get('split', 'test')}.tsv"
    run_path = folder / "run.trec"
    if run_path.exists() and qrels_path.exists():
        qrels, run = load_qrels(qrels_path), read_trec_run(run_path)
        per_query = evaluate_run(qrels, run, per_query=True)["per_query"]
        info.per_query_ndcg = {q: m["ndcg_at_10"] for q, m in per_query.items()}
        info.samples = (ScoreSamples.load(folder / "scores.npz") if (folder / "scores.npz").exists()
                        else samples_from_run(run, qrels))
        if "global_auc" not in info.metrics:
            from densekit.evaluation.auc import auc_summary

            summary = auc_summary(info.samples)
            info.metrics.update({k: v for k, v in summary.items() if k != "per_query_auc"})
    for name in ("sts.json", "mteb_summary.json"):
        if (folder / name).exists():
            info.extras[name] = _read_json(folder / name)
    return info


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _metrics_rows(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]]:
    header = ["run", *TABLE_METRICS, "AUC scores from", "queries"]
    rows = []
    base = runs[0].metrics
    for i, run in enumerate(runs):
        cells = [run.label]
        same_source = run.metrics.get("score_source") == base.get("score_source")
        for key in TABLE_METRICS:
            value = run.metrics.get(key)
            cell = _fmt(value)
            comparable = same_source or "auc" not in key  # top-k AUC and corpus AUC are not comparable
            if i and comparable and isinstance(value, int | float) and isinstance(base.get(key), int | float):
                cell += f" ({value - base[key]:+.4f})"
            cells.append(cell)
        cells.append(_fmt(run.metrics.get("score_source")))
        cells.append(_fmt(run.metrics.get("num_queries")))
        rows.append(cells)
    return header, rows


def _extra_rows(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]] | None:
    columns: list[str] = []
    for run in runs:
        for key in run.extras.get("sts.json", {}):
            if key not in columns:
                columns.append(key)
        for task in run.extras.get("mteb_summary.json", {}).get("tasks", {}):
            if f"MTEB {task}" not in columns:
                columns.append(f"MTEB {task}")
    if not columns:
        return None
    rows = []
    for run in runs:
        sts, mteb = run.extras.get("sts.json", {}), run.extras.get("mteb_summary.json", {}).get("tasks", {})
        cells = [run.label]
        for col in columns:
            if col.startswith("MTEB "):
                task = mteb.get(col[5:], {})
                split = next((v for v in task.values() if isinstance(v, dict) and "main_score" in v), {})
                cells.append(_fmt(split.get("main_score")))
            else:
                cells.append(_fmt(sts.get(col)))
        rows.append(cells)
    return ["run", *columns], rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_compare(run_dirs: list[str | Path], output_dir: str | Path,
                   labels: list[str] | None = None) -> dict:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNGs into ``output_dir``."""
    if not run_dirs:
        raise DataError("--compare needs at least one run folder")
    labels = labels or []
    runs = [load_run_folder(d, labels[i] if i < len(labels) else None) for i, d in enumerate(run_dirs)]
    seen: dict[str, int] = {}
    for run in runs:  # two folders with the same name (a/zs, b/zs) get distinct labels
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label}#{seen[run.label]}"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []
    with_scores = {r.label: r.samples for r in runs if r.samples is not None}
    if with_scores:
        figures.append(("ROC curves (global AUC)", plot_roc(with_scores, output_dir / "roc.png")))
        hist = plot_score_histograms(with_scores, output_dir / "score_hist.png")
        figures.append(("Score histograms", hist))
    base = runs[0]
    comparisons = {}
    for i, run in enumerate(runs[1:], start=1):
        if base.per_query_ndcg and run.per_query_ndcg:
            path = plot_per_query_delta(base.per_query_ndcg, run.per_query_ndcg, (base.label, run.label),
                                        output_dir / f"per_query_delta_{i}.png")
            figures.append((f"Per-query nDCG@10: {run.label} vs {base.label}", path))
            common = set(base.per_query_ndcg) & set(run.per_query_ndcg)
            diffs = [run.per_query_ndcg[q] - base.per_query_ndcg[q] for q in common]
            comparisons[run.label] = {"better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
                                      "same": sum(d == 0 for d in diffs)}
    header, rows = _metrics_rows(runs)
    extra = _extra_rows(runs)
    sources = [f"- **{r.label}**: `{r.folder}` (model `{r.metrics.get('model')}`, "
               f"data `{r.metrics.get('dataset')}` split `{r.metrics.get('split')}`; "
               f"scores: {getattr(r.samples, 'source', 'none')})" for r in runs]
    wins = [f"- {label} vs {base.label}: {c['better']} queries better, {c['worse']} worse, {c['same']} same "
            "(nDCG@10)" for label, c in comparisons.items()]
    md = ["# densekit evaluation report", "",
          f"Baseline: **{base.label}**; changes in brackets are against it.", "",
          "## Retrieval metrics", "", _md_table(header, rows), ""]
    if extra:
        md += ["## STS / MTEB", "", _md_table(*extra), ""]
    if wins:
        md += ["## Per-query changes", "", *wins, ""]
    md += ["## Runs", "", *sources, ""]
    for title, path in figures:
        md += [f"## {title}", "", f"![{title}]({path.name})", ""]
    atomic_write_text(output_dir / "report.md", "\n".join(md))

    def img(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>densekit evaluation report</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child{text-align:left}"
             "img{max-width:100%}</style></head><body>",
             "<h1>densekit evaluation report</h1>",
             f"<p>Baseline: <b>{html.escape(base.label)}</b>; changes in brackets are against it.</p>",
             "<h2>Retrieval metrics</h2>", _html_table(header, rows)]
    if extra:
        parts += ["<h2>STS / MTEB</h2>", _html_table(*extra)]
    if wins:
        parts += ["<h2>Per-query changes</h2><ul>", *(f"<li>{html.escape(w[2:])}</li>" for w in wins),
                  "</ul>"]
    parts += ["<h2>Runs</h2><ul>"] + [f"<li>{html.escape(s[2:])}</li>" for s in sources] + ["</ul>"]
    for title, path in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{img(path)}'>")
    parts.append("</body></html>")
    atomic_write_text(output_dir / "report.html", "\n".join(parts))
    summary = {"runs": [{"label": r.label, "folder": str(r.folder),
                         **{k: r.metrics.get(k) for k in [*TABLE_METRICS, "num_queries"]}} for r in runs],
               "per_query_changes": comparisons, "figures": [str(p) for _, p in figures]}
    atomic_write_json(output_dir / "report.json", summary)
    return summary
