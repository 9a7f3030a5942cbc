"""``generator``: queries written by a sequence-to-sequence model from each document (doc2query: Nogueira et al.,
"Document Expansion by Query Prediction", 2019; e.g. ``doc2query/msmarco-t5-base-v1``, or any local folder of a
``transformers`` seq2seq model). Sampling (top-k 10) gives ``per_document`` different queries."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

from densekit.errors import ConfigError
from densekit.mining.pseudo_queries import STRATEGIES


@lru_cache(maxsize=2)
def _load(model: str):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from densekit.models import resolve_model

    try:
        path = resolve_model(model)
        return AutoTokenizer.from_pretrained(path), AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"generator: cannot load the query generator '{model}': {exc}") from None


@STRATEGIES.register("generator")
def generated_queries(doc_id: str, doc: dict, rng: random.Random, model: str = "doc2query/msmarco-t5-base-v1",
                      per_document: int = 1, max_length: int = 64, max_input_length: int = 384) -> Iterator[str]:
    import torch

    tokenizer, generator = _load(model)
    text = f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()
    inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_input_length)
    torch.manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        outputs = generator.generate(**inputs, max_length=max_length, do_sample=True, top_k=10,
                                     num_return_sequences=per_document)
    for query in tokenizer.batch_decode(outputs, skip_special_tokens=True):
        if query.strip():
            yield query.strip()
