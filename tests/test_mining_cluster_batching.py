"""Cluster-grouped batches and in-batch false-negative masking, including a short run of the real trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densekit.errors import DataError
from densekit.training.cluster_batching import (
    ClusterGroupedBatchSampler,
    cluster_batch_sampler,
    cluster_examples,
    mask_in_batch_false_negatives,
)


def blobs(n_clusters: int = 4, per: int = 12, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    x = np.concatenate([c + 0.05 * rng.normal(size=(per, dim)) for c in centers]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def toy_dataset(n: int, duplicates: dict[int, int] | None = None):
    import datasets

    positives = [f"passage {i}" for i in range(n)]
    for i, j in (duplicates or {}).items():
        positives[i] = positives[j]
    return datasets.Dataset.from_dict({"anchor": [f"query {i}" for i in range(n)], "positive": positives})


def test_batches_are_cluster_coherent_and_cover_every_example():
    emb = blobs()
    labels = np.repeat(np.arange(4), 12)
    centroids = np.stack([emb[labels == c].mean(0) for c in range(4)])
    sampler = ClusterGroupedBatchSampler(toy_dataset(len(emb)), batch_size=6, drop_last=False, seed=1,
                                         labels=labels, centroids=centroids)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    assert sorted(i for b in batches for i in b) == list(range(len(emb)))
    # 12 examples per cluster and batches of 6: every batch is a single cluster
    assert all(len({int(labels[i]) for i in b}) == 1 for b in batches)
    sampler.set_epoch(1)
    assert [sorted(b) for b in sampler] != [sorted(b) for b in batches]  # reshuffled per epoch


def test_duplicate_positives_never_share_a_batch():
    labels = np.zeros(10, dtype=np.int64)
    dataset = toy_dataset(10, duplicates={1: 0, 2: 0, 5: 4})
    batches = list(ClusterGroupedBatchSampler(dataset, batch_size=4, drop_last=False, labels=labels))
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:
        texts = [dataset[i]["positive"] for i in b]
        assert len(texts) == len(set(texts))
    with pytest.raises(DataError, match="3 cluster labels for 10"):
        ClusterGroupedBatchSampler(dataset, 4, False, labels=[0, 1, 2])


def test_mask_in_batch_false_negatives():
    scores = torch.tensor([[0.9, 0.95, 0.2, 0.9],
                           [0.1, 0.8, 0.75, 0.3]])
    targets = torch.tensor([0, 1])
    masked = mask_in_batch_false_negatives(scores, targets, margin=0.0)
    assert torch.isinf(masked[0, 1]) and torch.isinf(masked[0, 3])  # above, and equal to (a copy of) the positive
    assert masked[0, 0] == 0.9 and masked[0, 2] == 0.2
    assert not torch.isinf(masked[1]).any()
    masked = mask_in_batch_false_negatives(scores, targets, margin=0.1)
    assert torch.isinf(masked[1, 2]) and masked[1, 1] == 0.8


def test_trainer_accepts_the_cluster_sampler(tiny_model_dir, tmp_path):
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from densekit.training.losses.infonce import InfoNCELoss

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    dataset = toy_dataset(24)
    emb = model.encode(dataset["anchor"], normalize_embeddings=True, convert_to_numpy=True)
    labels, centroids = cluster_examples(emb, n_clusters=3, seed=0)
    factory = cluster_batch_sampler(labels, centroids)

    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                                                max_steps=3, report_to="none", save_strategy="no",
                                                batch_sampler=factory, use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=InfoNCELoss(model))
    sampler = trainer.get_batch_sampler(dataset, 8, False, seed=0)
    assert isinstance(sampler, ClusterGroupedBatchSampler)
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.training_loss)
