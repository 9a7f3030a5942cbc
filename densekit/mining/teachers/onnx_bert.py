"""Feeding tokenised text to a BERT exported to ONNX: length-sorted, padded int64 batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def padded_batches(encodings: Sequence, batch_size: int,
                   input_names: set[str]) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``(row indices, feeds)`` per batch of ``tokenizers`` encodings, shortest first so batches pad little."""
    order = np.argsort([len(e.ids) for e in encodings])
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encodings[i].ids) for i in idx)
        feeds = {name: np.zeros((len(idx), width), dtype=np.int64)
                 for name in ("input_ids", "attention_mask", "token_type_ids")}
        for row, i in enumerate(idx):
            n = len(encodings[i].ids)
            feeds["input_ids"][row, :n] = encodings[i].ids
            feeds["attention_mask"][row, :n] = encodings[i].attention_mask
            feeds["token_type_ids"][row, :n] = encodings[i].type_ids
        yield idx, {k: v for k, v in feeds.items() if k in input_names}
