"""densekit train: contrastive fine-tuning of a sentence-transformers model."""

from __future__ import annotations

from densekit.commands._common import parse_key_values

NAME = "train"
HELP = "train a bi-encoder (InfoNCE with in-batch + hard negatives by default); resumes after an interrupt"


def add_arguments(p) -> None:
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="hub name or local sentence-transformers folder")
    p.add_argument("--data", default=None,
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
    p.add_argument("--cluster-batches", default=None, metavar="N|auto",
                   help="fill each batch from k-means clusters of the queries (B3/NGAME), so in-batch negatives "
                        "are hard; N clusters or auto (one per batch). Pair with --loss-option "
                        "false_negative_margin=0.1 to mask in-batch false negatives")


    p.add_argument("--negative-weights", action="store_true",
                   help="weigh each hard negative by the 'weight' of the mined file (densekit mine --soft-weights)")
    g = p.add_argument_group("training modes (--mode star | ance | adore; docs/training.md)")
    g.add_argument("--mode", default="static",
                   help="static (mined negatives, default), star (static hard + in-batch random negatives, "
                        "pairwise loss), ance (negatives re-mined during training), adore (query encoder only, "
                        "against a fixed document index)")
    g.add_argument("--beir", default=None, help="BEIR folder or name with the corpus and qrels (star, ance, adore)")
    g.add_argument("--split", default="train", help="qrels split of --beir")
    g.add_argument("--cache-dir", default=None, help="cache for corpus embeddings and teacher scores")
    g.add_argument("--refresh-steps", type=int, default=100, help="ance: re-mine negatives every N steps")
    g.add_argument("--refresh-fraction", type=float, default=1.0,
                   help="ance: share of the corpus re-encoded per refresh (a rotating slice)")
    g.add_argument("--refresh-negatives", type=int, default=None, help="ance: negatives mined per query")
    g.add_argument("--refresh-window", type=int, nargs=2, default=[10, 50], metavar=("START", "END"),
                   help="ance: rank window of the re-mined negatives")
    g.add_argument("--refresh-threads", type=int, default=1, help="ance: CPU threads of the refresh worker")
    g.add_argument("--refresh-max-seq-length", type=int, default=None,
                   help="document length when encoding the corpus (ance, adore; default: the model's)")
    g.add_argument("--refresh-sampler", default="top", help="ance: sampler of the re-mined negatives")
    g.add_argument("--refresh-teacher", default=None,
                   help="ance: denoise refreshed negatives with this teacher (cross-encoder, bi-encoder)")
    g.add_argument("--refresh-perc-pos", type=float, default=None, help="ance: TopK-PercPos filter, e.g. 0.95")
    g.add_argument("--refresh-min-positive-score", type=float, default=None,
                   help="ance: skip the relative filter when the teacher scores the positive below this")
    g.add_argument("--adore-depth", type=int, default=200, help="adore: documents retrieved per query and step")


def refresh_options(args) -> dict:
    options: dict = {"sampler": args.refresh_sampler}
    if args.refresh_teacher:
        options["denoise"] = {"teacher": args.refresh_teacher, "perc_pos": args.refresh_perc_pos,
                              "min_positive_score": args.refresh_min_positive_score}
    elif args.refresh_perc_pos is not None:
        from densekit.errors import ConfigError

        raise ConfigError("--refresh-perc-pos needs --refresh-teacher")
    return options


def run(args) -> int:
    from densekit.training.train import TrainArgs, train

    targs = TrainArgs(model=args.model, data=args.data, output=args.output, loss=args.loss,
                      loss_options=parse_key_values(args.loss_option, "--loss-option"), epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      warmup_ratio=args.warmup_ratio, num_negatives=args.num_negatives,
                      max_seq_length=args.max_seq_length, bf16=args.bf16, seed=args.seed,
                      save_steps=args.save_steps, resume=args.resume, data_format=args.data_format,
                      gradcache=args.gradcache, mini_batch_size=args.mini_batch_size,
                      max_train_examples=args.max_train_examples, cluster_batches=args.cluster_batches,
                      negative_weights=args.negative_weights, mode=args.mode, beir=args.beir, split=args.split,
                      cache_dir=args.cache_dir,
                      refresh_steps=args.refresh_steps, refresh_fraction=args.refresh_fraction,
                      refresh_negatives=args.refresh_negatives, refresh_window=tuple(args.refresh_window),
                      refresh_threads=args.refresh_threads, refresh_max_seq_length=args.refresh_max_seq_length,
                      refresh_options=refresh_options(args), adore_depth=args.adore_depth)
    path = train(targs)
    print(f"model written to {path}")
    return 0
