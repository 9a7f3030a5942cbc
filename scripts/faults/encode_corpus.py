"""Encode a BEIR corpus into densekit's embedding store (``densekit.vectors.corpus_vectors``), shard by shard.

The crash harness kills this at random moments: the corpus-encoding step of ``densekit mine`` / ``index`` on its
own, with small shards so that many shard writes happen. Prints the cache folder.

    python scripts/faults/encode_corpus.py --model MODEL --data BEIR_DIR --cache-dir CACHE --shard-size 16
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--shard-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    from densekit.data.beir import load_beir
    from densekit.models import load_model
    from densekit.vectors import corpus_vectors

    dataset = load_beir(args.data, split=None)
    store = corpus_vectors(load_model(args.model), dataset.corpus, args.cache_dir, batch_size=args.batch_size,
                           shard_size=args.shard_size)
    print(f"{store.count} x {store.dim} embeddings cached under {args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
