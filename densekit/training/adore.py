"""ADORE: train the query encoder against a fixed document index, with a LambdaRank-weighted pairwise loss.

Zhan et al., "Optimizing Dense Retrieval Model Training with Hard Negatives", SIGIR 2021. The documents are
encoded once (by the starting model, e.g. one trained with STAR) and never again; at every step the batch's
queries are encoded by the trainable model, the top ``depth`` documents are retrieved from the fixed index,
labelled from the qrels (judged positives that were not retrieved are added, as in the paper's code), and
each (relevant, non-relevant) pair costs ``|delta nDCG@cutoff| * log(1 + exp(scale * (s- - s+)))``: the
change in the metric if the two swapped places, so pairs that decide the top of the ranking dominate.

Only the query side learns; the result is a query encoder plus the index it was trained against, which is
written beside it (``<output>-index``, a densekit index folder whose ``meta.json`` names both models), so
``densekit eval --index <output>-index --model <output>`` scores the pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densekit.retrieval.index import DenseIndex


def lambda_weights(ranks_pos: Tensor, ranks_neg: Tensor, ideal_dcg: float, cutoff: int | None = 10) -> Tensor:
    """|delta nDCG| of swapping each positive (binary gain 1) with each negative (gain 0); 1-based ranks."""
    def discount(ranks: Tensor) -> Tensor:
        d = 1.0 / torch.log2(ranks.float() + 1.0)
        return d if cutoff is None else torch.where(ranks <= cutoff, d, torch.zeros_like(d))

    return (discount(ranks_pos)[:, None] - discount(ranks_neg)[None, :]).abs() / ideal_dcg


class AdoreLoss(nn.Module):
    """The ADORE step as a sentence-transformers loss over a one-column (query) dataset with ``label`` = row."""

    def __init__(self, model: nn.Module, index: DenseIndex, doc_embeddings: np.ndarray, rows, depth: int = 200,
                 scale: float = 20.0, cutoff: int | None = 10) -> None:
        super().__init__()
        self.model = model
        self.index = index
        self.doc_embeddings = torch.from_numpy(np.ascontiguousarray(doc_embeddings, dtype=np.float32))
        self.row_of = {doc: i for i, doc in enumerate(index.doc_ids)}
        self.rows = rows
        self.depth = depth
        self.scale = scale
        self.cutoff = cutoff

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        queries = self.model(features[0])["sentence_embedding"]
        return self.compute_loss_from_embeddings([queries], labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("ADORE needs the row index of each query as labels")
        queries = F.normalize(embeddings[0], dim=-1)
        _, retrieved = self.index.search(queries.detach().float().cpu().numpy(), self.depth)
        docs = self.doc_embeddings.to(queries.device)
        losses = []
        for b, r in enumerate(labels.tolist()):
            relevant = self.rows.relevant.get(self.rows.query_ids[int(r)], set())
            pos_rows = sorted(self.row_of[d] for d in relevant if d in self.row_of)
            pos_set = set(pos_rows)
            neg_rows = [int(i) for i in retrieved[b] if i >= 0 and int(i) not in pos_set]
            if not pos_rows or not neg_rows:
                continue
            pos_scores = docs[pos_rows] @ queries[b]
            neg_scores = docs[neg_rows] @ queries[b]
            with torch.no_grad():  # ranks in the current ranking of positives + retrieved negatives
                all_scores = torch.cat([pos_scores, neg_scores])
                order = torch.argsort(all_scores, descending=True)
                ranks = torch.empty_like(order)
                ranks[order] = torch.arange(1, len(order) + 1, device=order.device)
                ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(pos_rows), self.cutoff or len(pos_rows))))
                weights = lambda_weights(ranks[:len(pos_rows)], ranks[len(pos_rows):], ideal, self.cutoff)
            pair = F.softplus(self.scale * (neg_scores[None, :] - pos_scores[:, None]))
            losses.append((weights * pair).sum())
        if not losses:
            return queries.sum() * 0.0
        return torch.stack(losses).mean()

    def get_config_dict(self) -> dict:
        return {"depth": self.depth, "scale": self.scale, "cutoff": self.cutoff}
