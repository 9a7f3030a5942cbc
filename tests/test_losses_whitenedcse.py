"""WhitenedCSE: the whitening maths, the safe inverse square root, and the loss as the authors' code forms it."""

import math

import pytest
import torch

from densekit.errors import ConfigError
from densekit.training.losses import LOSSES
from densekit.training.losses.whitenedcse import (
    InverseSqrtPSD,
    group_whiten,
    shuffled_group_whitening,
    view_infonce,
)


def test_group_whiten_gives_identity_covariance():
    torch.manual_seed(0)
    x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    w = group_whiten(x, eps=1e-9)
    cov = w.T @ w / len(w)  # the authors' covariance: divided by the batch size
    assert torch.allclose(w.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(cov, torch.eye(6, dtype=torch.float64), atol=1e-6)


def test_shuffled_group_whitening_whitens_each_group_in_original_channel_order():
    torch.manual_seed(1)
    x = torch.randn(300, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    w = shuffled_group_whitening(x, num_groups=2, generator=generator, eps=1e-9)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    for group in perm.split(4):  # the channels that were whitened together
        block = w[:, group]
        cov = block.T @ block / len(w)
        assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=1e-6)


def test_inverse_sqrt_matches_definition_and_gradcheck():
    torch.manual_seed(0)
    a = torch.randn(10, 4, dtype=torch.float64)
    c = a.T @ a / 9 + 0.1 * torch.eye(4, dtype=torch.float64)
    root = InverseSqrtPSD.apply(c, 1e-12)
    assert torch.allclose(root @ c @ root, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert torch.autograd.gradcheck(lambda m: InverseSqrtPSD.apply(m, 1e-12), (c.requires_grad_(),))


def test_inverse_sqrt_gradient_is_finite_for_repeated_eigenvalues():
    c = (3.0 * torch.eye(5, dtype=torch.float64)).requires_grad_()
    InverseSqrtPSD.apply(c, 1e-12).sum().backward()
    # d tr(1 C^-1/2 1^T)/dC at C = 3I is f'(3) * ones = -0.5 * 3^-1.5 everywhere
    assert torch.allclose(c.grad, torch.full((5, 5), -0.5 * 3 ** -1.5, dtype=torch.float64))


def test_view_infonce_known_answer():
    views = torch.eye(4)  # orthogonal sentences, the positive view identical to the anchor
    expected = -math.log(math.exp(2) / (math.exp(2) + 3))  # cosine 1 vs three cosines 0, at temperature 0.5
    assert view_infonce(views, views.clone(), 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_one_infonce_per_extra_view_summed():
    """views=3: the loss is InfoNCE(anchor, view 2) + InfoNCE(anchor, view 3), each whitened separately."""
    torch.manual_seed(0)
    a, b, c = torch.randn(16, 12), torch.randn(16, 12), torch.randn(16, 12)
    loss_fn = LOSSES.get("whitenedcse")(None, num_groups=3, views=3, head=False)
    torch.manual_seed(5)
    value = loss_fn.compute_loss_from_embeddings([a, b, c]).item()
    torch.manual_seed(5)
    wa, wb, wc = (shuffled_group_whitening(x, 3) for x in (a, b, c))
    expected = view_infonce(wa, wb, 0.05).item() + view_infonce(wa, wc, 0.05).item()
    assert value == pytest.approx(expected, rel=1e-6)


def test_prepare_batch_adds_the_extra_dropout_views():
    loss_fn = LOSSES.get("whitenedcse")(None, views=3, head=False)
    features = [{"input_ids": torch.ones(2, 3)}, {"input_ids": torch.ones(2, 3)}]
    loss_fn.prepare_batch(features)
    assert len(features) == 3 and features[2]["input_ids"] is features[0]["input_ids"]


def test_no_gradient_through_the_whitening_matrix_unless_asked():
    torch.manual_seed(0)
    a = torch.randn(16, 12, requires_grad=True)
    b = (a.detach() + 0.1 * torch.randn(16, 12)).requires_grad_()
    for detach in (True, False):
        loss = LOSSES.get("whitenedcse")(None, num_groups=3, views=2, head=False,
                                         detach_whitening=detach).compute_loss_from_embeddings([a, b])
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
        a.grad = b.grad = None


def test_the_training_only_head_is_trained_and_not_saved(tiny_model_dir):
    from densekit.models import load_model

    model = load_model(tiny_model_dir)
    loss_fn = LOSSES.get("whitenedcse")(model)
    assert torch.equal(loss_fn.head.weight, torch.eye(32))
    assert any(name.startswith("head.") for name, _ in loss_fn.named_parameters())  # optimised with the model
    assert not any("head" in name for name in model.state_dict())  # the model folder keeps the plain encoder


def test_twins_beat_random_pairs():
    torch.manual_seed(0)
    a = torch.randn(32, 8)
    loss_fn = LOSSES.get("whitenedcse")(None, num_groups=2, views=2, head=False)
    torch.manual_seed(1)
    matched = loss_fn.compute_loss_from_embeddings([a, a + 0.01 * torch.randn(32, 8)])
    torch.manual_seed(1)
    unmatched = loss_fn.compute_loss_from_embeddings([a, torch.randn(32, 8)])
    assert matched.item() < unmatched.item()


def test_batch_too_small_for_group_is_an_error():
    with pytest.raises(ConfigError, match="too small"):
        LOSSES.get("whitenedcse")(None, num_groups=2, head=False).compute_loss_from_embeddings(
            [torch.randn(4, 128), torch.randn(4, 128)])
