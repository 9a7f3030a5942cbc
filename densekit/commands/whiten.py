"""densekit whiten: fit BERT-whitening on a corpus and write a model folder that applies it."""

from __future__ import annotations

from dataclasses import dataclass

from densekit.encoders import EncoderOptions
from densekit.errors import ConfigError
from densekit.options import option

NAME = "whiten"
HELP = "fit post-hoc (BERT-)whitening, optionally reducing the dimension, as a module of the model folder"


@dataclass
class WhitenOptions:
    """whitening"""

    data: str = option(help="sentences to fit on: a text file (one per line) or a BEIR corpus.jsonl(.gz)")
    output: str = option(help="whitened model folder to write")
    model: str = option("all-MiniLM-L6-v2", help="hub name or local sentence-transformers folder")
    dim: int | None = option(None, help="keep the top-N whitened dimensions (default: all)")
    max_sentences: int | None = option(None, help="fit on the first N sentences only")


OPTIONS = (WhitenOptions, EncoderOptions)


def run(opts: WhitenOptions, encoder: EncoderOptions) -> int:
    from densekit.training.whitening import read_sentences, whiten_model

    if encoder.bf16 or encoder.max_seq_length:
        raise ConfigError("--bf16 and --max-seq-length do not apply to whiten (it fits on the model as it is saved)")
    sentences = read_sentences(opts.data, opts.max_sentences)
    path = whiten_model(opts.model, sentences, opts.output, dim=opts.dim, batch_size=encoder.batch_size,
                        backend=encoder.backend, cache_dir=encoder.cache)
    print(f"whitened model ({len(sentences)} fit sentences) written to {path}")
    return 0
