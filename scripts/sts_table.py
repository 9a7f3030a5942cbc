"""STS table for the sentence objectives: Spearman x100 on STS-B test, SICK-R and STS12-16.

Trains each objective from the same start model on the same data (the wiki sample for the unsupervised
ones, the SNLI triplets for the supervised ones), evaluates each model before/after, and with whitening
fitted on the wiki sample when asked. Every step writes its JSON under ``--out`` and is skipped when that
JSON exists, so the script resumes and the table can be re-rendered without recomputing::

    python scripts/sts_table.py --out runs/sts \
        --runs base,base+whiten,simcse-unsup,debcse,whitenedcse,simcse-sup
    python scripts/sts_table.py --out runs/sts --markdown   # print the table from what is there

Run names: ``base``, ``<loss>`` (trained with that loss; ``simcse-sup``/``infonce-nli``/``mw-nli`` on SNLI
triplets, everything else on the wiki sentences), and ``<run>+whiten`` (that model + BERT-whitening).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from densekit.evaluation.sts import STS_TASKS, evaluate_sts  # noqa: E402
from densekit.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DENSEKIT_DATA", REPO.parent / "shared" / "data"))
WIKI = DATA / "unlabeled" / "wiki1m_for_simcse_head11914.txt"
NLI = DATA / "nli" / "snli_devtest_triplets.csv"
NLI_RUNS = {"simcse-sup": "simcse-sup", "infonce-nli": "infonce", "mw-nli": "mw"}


def train_run(name: str, args, models: Path) -> Path:
    from densekit.training.config import TrainConfig
    from densekit.training.train import train

    output = models / name
    if (output / "modules.json").exists():
        return output
    loss = NLI_RUNS.get(name, name)
    data = NLI if name in NLI_RUNS else WIKI
    options = {}
    if loss in ("infonce", "mw"):
        options = {"scale": 20.0}
    train(TrainConfig.from_options(model=args.model, data=str(data), output=str(output), loss=loss,
                                   loss_option=options, epochs=args.epochs, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, max_seq_length=args.max_seq_length,
                                   seed=args.seed, save_steps=10_000, max_train_examples=args.max_train_examples,
                                   gradcache=args.gradcache, mini_batch_size=args.mini_batch_size))
    return output


def whiten_run(source: Path, output: Path, args) -> Path:
    from densekit.training.whitening import read_sentences, whiten_model

    if not (output / "modules.json").exists():
        whiten_model(str(source), read_sentences(WIKI, args.whiten_sentences), output, dim=args.whiten_dim)
    return output


def random_init_model(output: Path, spec: str, tokenizer_from: str) -> str:
    """A random-init BERT of shape ``LAYERSxHIDDEN`` (e.g. ``4x256``): training from scratch shows the objectives'
    relative behaviour, which an already contrastively trained model hides."""
    if (output / "modules.json").exists():
        return str(output)
    from densekit.models import build_random_bert

    try:
        layers, hidden = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--random-init expects LAYERSxHIDDEN such as 4x256, got '{spec}'") from None
    return build_random_bert(output, tokenizer_from, layers, hidden)


def model_for(run: str, args, models: Path) -> str:
    base, _, suffix = run.partition("+")
    source = args.model if base == "base" else str(train_run(base, args, models))
    if suffix == "whiten":
        source_path = Path(resolve(args.model) if base == "base" else source)
        return str(whiten_run(source_path, models / run, args))
    if suffix:
        raise SystemExit(f"unknown run suffix '+{suffix}'")
    return source


def resolve(name: str) -> str:
    from densekit.models import resolve_model

    return resolve_model(name)


def markdown(out: Path, order: list[str], tasks: list[str]) -> str:
    """Rows for the runs that have results; ``avg`` is over ``tasks`` (the columns shown)."""
    head = "| model | " + " | ".join(tasks) + " | avg |\n|---|" + "---:|" * (len(tasks) + 1)
    lines = [head]
    for run in order:
        path = out / f"{run}.json"
        if not path.exists():
            continue
        scores = json.loads(path.read_text())["scores"]
        if not all(t in scores for t in tasks):
            continue
        avg = sum(scores[t] for t in tasks) / len(tasks)
        lines.append(f"| {run} | " + " | ".join(f"{scores[t]:.2f}" for t in tasks) + f" | {avg:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--out", default="runs/sts")
    p.add_argument("--runs", default="base,base+whiten,simcse-unsup,debcse,whitenedcse,simcse-sup")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--gradcache", action="store_true")
    p.add_argument("--mini-batch-size", type=int, default=16)
    p.add_argument("--whiten-sentences", type=int, default=5000)
    p.add_argument("--whiten-dim", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--random-init", metavar="LAYERSxHIDDEN", default=None,
                   help="start from a random-init BERT of this shape (with --model's tokenizer), e.g. 4x256")
    p.add_argument("--tasks", default=",".join(STS_TASKS))
    p.add_argument("--markdown", action="store_true", help="only print the table from the JSONs in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    runs = [r for r in args.runs.split(",") if r]
    if args.markdown:
        print(markdown(out, runs, args.tasks.split(",")))
        return 0
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    if args.random_init:
        args.model = random_init_model(models / "random-init", args.random_init, args.model)
    for run in runs:
        result_path = out / f"{run}.json"
        if result_path.exists():
            continue
        started = time.time()
        model_path = model_for(run, args, models)
        trained_s = time.time() - started
        scores = evaluate_sts(model_path, tasks=args.tasks.split(","), data_dir=str(DATA))
        atomic_write_json(result_path, {"run": run, "model": model_path, "scores": scores,
                                        "train_or_fit_s": round(trained_s, 1),
                                        "eval_s": round(time.time() - started - trained_s, 1),
                                        "config": {k: v for k, v in vars(args).items() if k != "markdown"}})
        print(run, json.dumps(scores), flush=True)
    print(markdown(out, runs, args.tasks.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
