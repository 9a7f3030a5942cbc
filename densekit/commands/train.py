"""densekit train: contrastive fine-tuning of a sentence-transformers model."""

from __future__ import annotations

from densekit.commands._common import parse_key_values

NAME = "train"
HELP = "train a bi-encoder (InfoNCE with in-batch + hard negatives by default); resumes after an interrupt"


def add_arguments(p) -> None:
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="hub name or local sentence-transformers folder")
    p.add_argument("--data", required=True,
                   help="training JSONL (e.g. from densekit mine), a datasets folder, a .txt of sentences "
                        "(unsupervised: each line becomes the pair (s, s)) "
                        "or an NLI .csv (sent0,sent1,hard_neg)")
    p.add_argument("--data-format", default="auto", choices=["auto", "examples", "text", "nli-csv"],
                   help="how to read --data (auto: by file extension)")
    p.add_argument("--max-train-examples", type=int, default=None, help="use only the first N examples")
    p.add_argument("--output", required=True, help="model folder to write")
    p.add_argument("--loss", default="infonce", help="registered loss name")
    p.add_argument("--loss-option", action="append", default=None, metavar="KEY=VALUE", help="e.g. scale=20")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", "--lr", type=float, default=2e-5, dest="learning_rate")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--num-negatives", type=int, default=None, help="hard negatives per example (default: all)")
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision training")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--no-resume", action="store_false", dest="resume", help="ignore existing checkpoints")
    p.add_argument("--gradcache", action="store_true",
                   help="GradCache: embed in mini-batches, so --batch-size (the contrastive batch) "
                        "is not bound by memory")
    p.add_argument("--mini-batch-size", type=int, default=16, help="GradCache mini-batch size (memory-bound)")


def run(args) -> int:
    from densekit.training.train import TrainArgs, train

    targs = TrainArgs(model=args.model, data=args.data, output=args.output, loss=args.loss,
                      loss_options=parse_key_values(args.loss_option, "--loss-option"), epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      warmup_ratio=args.warmup_ratio, num_negatives=args.num_negatives,
                      max_seq_length=args.max_seq_length, bf16=args.bf16, seed=args.seed,
                      save_steps=args.save_steps, resume=args.resume, data_format=args.data_format,
                      gradcache=args.gradcache, mini_batch_size=args.mini_batch_size,
                      max_train_examples=args.max_train_examples)
    path = train(targs)
    print(f"model written to {path}")
    return 0
