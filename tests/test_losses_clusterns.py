"""ClusterNS as the authors' code forms it: online centroids, the second-nearest centroid as a hard negative,
the bidirectional margin on same-cluster pairs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densekit.training.losses import LOSSES


def loss_fn(**options):
    return LOSSES.get("clusterns")(None, **options)


def test_no_clustering_before_the_batch_is_spread_out():
    z = F.normalize(torch.ones(4, 3) + 0.01 * torch.randn(4, 3), dim=-1)  # all alike: mean cosine ~1 > 0.4
    fn = loss_fn(clusters=2)
    value = fn.compute_loss_from_embeddings([z, z.clone()])
    assert not fn.initialised
    expected = F.cross_entropy(F.normalize(z, dim=-1) @ F.normalize(z, dim=-1).T / 0.05, torch.arange(4))
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_greedy_initialisation_then_second_nearest_centroid_and_margin():
    z1 = torch.eye(4)
    z2 = torch.eye(4) + 0.1
    fn = loss_fn(clusters=2, bml_weight=1.0, alpha=0.0, beta=0.3, lr=0.5)
    value = fn.compute_loss_from_embeddings([z1, z2])
    assert fn.initialised and fn.centroids.shape == (2, 4)
    # the first centroid is a row of z1; the second the row least similar to it (any other, all orthogonal)
    first = fn.centroids  # after one update with lr 0.5: 0.5 * sum(members) + 0.5 * centroid
    assert torch.all(first.sum(1) > 0)
    # recompute by hand from the initial centroids the loss drew
    fn2 = loss_fn(clusters=2, bml_weight=1.0, alpha=0.0, beta=0.3, lr=0.5)
    fn2.initialise(F.normalize(z1, dim=-1))
    init = fn2.centroids.clone()
    sim = F.normalize(z1, dim=-1) @ init.T
    nearest = sim.topk(2, dim=-1).indices
    batch_cos = (F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T).numpy()
    hard = init[nearest[:, 1]]
    logits = np.concatenate([batch_cos, (F.normalize(z1, dim=-1) @ F.normalize(hard, dim=-1).T).numpy()], 1) / 0.05
    ce = np.mean([-(logits[i, i] - np.log(np.exp(logits[i]).sum())) for i in range(4)])
    same = (nearest[:, :1] == nearest[:, :1].T).numpy() & ~np.eye(4, dtype=bool)
    delta = (batch_cos - np.diag(batch_cos)[:, None]) * same
    bml = np.mean(np.maximum(delta, 0) + np.maximum(-delta - 0.3, 0))
    assert value.item() == pytest.approx(ce + bml, rel=1e-5)
    # the update: every centroid that got rows moved to lr * sum + (1 - lr) * old
    members = F.one_hot(nearest[:, 0], 2).float()
    moved = 0.5 * (members.T @ F.normalize(z1, dim=-1)) + 0.5 * init
    assert torch.allclose(fn.centroids, torch.where((members.sum(0) > 0)[:, None], moved, init), atol=1e-6)


def test_same_cluster_pairs_far_from_their_positive_cost_nothing_within_the_margins():
    fn = loss_fn(alpha=0.0, beta=0.3)
    batch_cos = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    same = torch.tensor([[False, True], [True, False]])
    # delta = -0.2: between -beta and -alpha, no cost on the masked pairs
    assert fn.bidirectional_margin(batch_cos, same).item() == pytest.approx(0.0)
    far = torch.tensor([[1.0, 0.5], [0.5, 1.0]])  # delta = -0.5 < -beta: pushed back up by 0.2
    assert fn.bidirectional_margin(far, same).item() == pytest.approx(2 * 0.2 / 4)


def test_trains_from_the_cli(tiny_model_dir, tmp_path):
    import json

    from densekit.cli import main

    data = tmp_path / "s.txt"
    data.write_text("".join(f"sentence {i} about topic {i % 5} and item {i % 7}\n" for i in range(40)))
    assert main(["train", "--model", tiny_model_dir, "--data", str(data), "--loss", "clusterns", "--loss-option",
                 "clusters=4", "--batch-size", "8", "--max-steps", "3", "--output", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "densekit_train.json").read_text())["global_step"] == 3
