"""densekit whiten: fit BERT-whitening on a corpus and write a model folder that applies it."""

from __future__ import annotations

NAME = "whiten"
HELP = "fit post-hoc (BERT-)whitening, optionally reducing the dimension, as a module of the model folder"


def add_arguments(p) -> None:
    p.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="hub name or local sentence-transformers folder")
    p.add_argument("--data", required=True,
                   help="sentences to fit on: a text file (one per line) or a BEIR corpus.jsonl(.gz)")
    p.add_argument("--output", required=True, help="whitened model folder to write")
    p.add_argument("--dim", type=int, default=None, help="keep the top-N whitened dimensions (default: all)")
    p.add_argument("--max-sentences", type=int, default=None, help="fit on the first N sentences only")
    p.add_argument("--batch-size", type=int, default=128, help="encoding batch size")


def run(args) -> int:
    from densekit.training.whitening import read_sentences, whiten_model

    sentences = read_sentences(args.data, args.max_sentences)
    path = whiten_model(args.model, sentences, args.output, dim=args.dim, batch_size=args.batch_size)
    print(f"whitened model ({len(sentences)} fit sentences) written to {path}")
    return 0
