"""Encode a BEIR corpus into densekit's embedding cache (``densekit.embeddings.encode_cached``), shard by shard.

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

    from densekit.data.beir import doc_text, load_beir
    from densekit.embeddings import encode_cached
    from densekit.models import load_model

    dataset = load_beir(args.data, split=None)
    texts = [doc_text(dataset.corpus[d]) for d in dataset.corpus]
    emb = encode_cached(load_model(args.model), texts, args.cache_dir, batch_size=args.batch_size,
                        shard_size=args.shard_size, desc="encode corpus")
    print(f"{emb.shape[0]} x {emb.shape[1]} embeddings cached under {args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
