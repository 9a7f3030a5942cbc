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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densekit.retrieval.index import DenseIndex
from densekit.training.losses.base import DensekitLoss, LossContext, distributed_world


def fixed_index(model_name: str, dataset, max_seq_length: int | None, cache_dir: str | None,
                backend: str = "auto") -> tuple[DenseIndex, np.ndarray]:
    """The corpus encoded once by a frozen copy of ``model_name``, as a flat index, and its embeddings.

    Under ``torchrun`` rank 0 encodes and broadcasts the vectors: the corpus is encoded once, not once per rank.
    The vectors come from the embedding store in ``cache_dir``; ADORE scores every step's retrieved documents on the
    device, so it holds the matrix itself (the flat index over it too).
    """
    from densekit.data.corpus import corpus_ids
    from densekit.encoders import load_encoder
    from densekit.models import describe_model
    from densekit.vectors import corpus_vectors

    rank, world = distributed_world()
    doc_ids = list(corpus_ids(dataset.corpus))
    doc_emb = None
    seq_len = max_seq_length
    if rank == 0:
        doc_model = load_encoder(model_name, max_seq_length, backend, cache_dir)
        seq_len = doc_model.max_seq_length
        doc_emb = corpus_vectors(doc_model, dataset.corpus, cache_dir, desc="encode corpus (fixed)").read_all()
        del doc_model
    if world > 1:
        import logging

        import torch.distributed as dist

        if rank == 0:
            logging.getLogger(__name__).info("fixed index: %d documents encoded once, on rank 0, shared with %d "
                                             "ranks", len(doc_ids), world)
        shape = [list(doc_emb.shape) if doc_emb is not None else None, seq_len]
        dist.broadcast_object_list(shape, src=0)
        tensor = torch.from_numpy(np.ascontiguousarray(doc_emb)) if rank == 0 else torch.empty(shape[0])
        dist.broadcast(tensor, src=0)
        doc_emb, seq_len = tensor.numpy(), shape[1]
    meta = {**describe_model(model_name), "max_seq_length": seq_len, "trained_by": "adore"}
    return DenseIndex.build(doc_emb, doc_ids, meta=meta), doc_emb


def lambda_weights(ranks_pos: Tensor, ranks_neg: Tensor, ideal_dcg: float, cutoff: int | None = 10) -> Tensor:
    """|delta nDCG| of swapping each positive (binary gain 1) with each negative (gain 0); 1-based ranks."""
    def discount(ranks: Tensor) -> Tensor:
        d = 1.0 / torch.log2(ranks.float() + 1.0)
        return d if cutoff is None else torch.where(ranks <= cutoff, d, torch.zeros_like(d))

    return (discount(ranks_pos)[:, None] - discount(ranks_neg)[None, :]).abs() / ideal_dcg


class AdoreLoss(DensekitLoss):
    """The ADORE step as a sentence-transformers loss over a one-column (query) dataset with ``label`` = row.

    Inputs: column ``(query)``, labels = row indices into ``context.rows`` (their qrels label the retrieved
    documents). Each device ranks its own queries against the whole fixed index, so nothing is gathered."""

    min_columns = 1
    needs_rows = True
    registered_name = "adore"

    def __init__(self, model, index: DenseIndex, doc_embeddings: np.ndarray, depth: int = 200,
                 scale: float = 20.0, cutoff: int | None = 10, *, context: LossContext | None = None) -> None:
        super().__init__(model, context)
        self.index = index
        self.doc_embeddings = torch.from_numpy(np.ascontiguousarray(doc_embeddings, dtype=np.float32))
        self.row_of = {doc: i for i, doc in enumerate(index.doc_ids)}
        self.depth = depth
        self.scale = scale
        self.cutoff = cutoff

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("ADORE needs the row index of each query as labels")
        queries = F.normalize(embeddings[0], dim=-1)
        _, retrieved = self.index.search(queries.detach().float().cpu().numpy(), self.depth)
        docs = self.doc_embeddings.to(queries.device)
        rows = self.context.rows
        losses = []
        for b, r in enumerate(labels.tolist()):
            relevant = rows.relevant.get(rows.query_id(int(r)), set())
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
