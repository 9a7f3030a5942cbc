import math

import pytest
import torch

from densekit.training.losses import LOSSES
from densekit.training.losses.base import LossContext
from densekit.training.losses.infonce import InfoNCELoss


def test_registered():
    assert LOSSES.get("infonce") is InfoNCELoss


def test_known_value_uniform_scores():
    # identical embeddings everywhere: every candidate scores the same, loss = log(#candidates)
    loss = InfoNCELoss(model=torch.nn.Identity(), scale=20.0)
    e = torch.ones(4, 8)
    value = loss.compute_loss_from_embeddings([e, e, e])  # 4 positives + 4 hard negatives = 8 candidates
    assert value.item() == pytest.approx(math.log(8), rel=1e-5)


def test_perfect_separation_gives_near_zero_loss():
    loss = InfoNCELoss(model=torch.nn.Identity(), scale=50.0)
    anchors = torch.eye(4, 8)
    negatives = torch.eye(8)[4:]  # orthogonal to every anchor
    assert loss.compute_loss_from_embeddings([anchors, anchors.clone(), negatives]).item() < 1e-6


def test_hard_negative_equal_to_positive_costs_log2():
    loss = InfoNCELoss(model=torch.nn.Identity(), scale=1000.0)
    anchors = torch.eye(3, 6)
    value = loss.compute_loss_from_embeddings([anchors, anchors.clone(), anchors.clone()])
    assert value.item() == pytest.approx(math.log(2), rel=1e-4)


def test_gradients_flow_through_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    loss = InfoNCELoss(model)
    features = [model.tokenize(t) for t in (["a query", "another"], ["its doc", "doc two"], ["neg", "neg two"])]
    value = loss(features, None)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_false_negative_margin_masks_a_copy_of_the_positive():
    # the hard negative is the positive itself: unmasked it costs log 2, masked the loss is ~0 again
    anchors = torch.eye(3, 6)
    plain = InfoNCELoss(model=torch.nn.Identity(), scale=1000.0)
    masked = InfoNCELoss(model=torch.nn.Identity(), scale=1000.0, false_negative_margin=0.0)
    embeddings = [anchors, anchors.clone(), anchors.clone()]
    assert plain.compute_loss_from_embeddings(embeddings).item() == pytest.approx(math.log(2), rel=1e-4)
    assert masked.compute_loss_from_embeddings(embeddings).item() < 1e-6
    assert masked.get_config_dict() == {"scale": 1000.0, "false_negative_margin": 0.0}


def test_negative_weights_zero_drops_a_false_negative_and_one_changes_nothing():
    anchors = torch.eye(3, 6)
    embeddings = [anchors, anchors.clone(), anchors.clone()]  # each hard negative is a copy of the positive
    labels = torch.tensor([2, 0, 1])  # row indices into the weight table
    ones = InfoNCELoss(torch.nn.Identity(), scale=1000.0, context=LossContext(negative_weights=torch.ones(3, 1)))
    assert ones.compute_loss_from_embeddings(embeddings, labels).item() == pytest.approx(math.log(2), rel=1e-4)
    zeros = InfoNCELoss(torch.nn.Identity(), scale=1000.0, context=LossContext(negative_weights=torch.zeros(3, 1)))
    assert zeros.compute_loss_from_embeddings(embeddings, labels).item() < 1e-6
