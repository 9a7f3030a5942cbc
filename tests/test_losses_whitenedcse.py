"""WhitenedCSE: the whitening maths, the safe inverse square root and the multi-positive loss."""

import math

import pytest
import torch

from densekit.errors import ConfigError
from densekit.training.losses import LOSSES
from densekit.training.losses.whitenedcse import (
    InverseSqrtPSD,
    group_whiten,
    multi_positive_infonce,
    shuffled_group_whitening,
)


def test_group_whiten_gives_identity_covariance():
    torch.manual_seed(0)
    x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    w = group_whiten(x, eps=1e-9)
    cov = w.T @ w / (len(w) - 1)
    assert torch.allclose(w.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(cov, torch.eye(6, dtype=torch.float64), atol=1e-6)


def test_shuffled_group_whitening_whitens_each_group_in_original_channel_order():
    torch.manual_seed(1)
    x = torch.randn(300, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    w = shuffled_group_whitening(x, group_size=4, generator=generator, eps=1e-9)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    for group in perm.split(4):  # the channels that were whitened together
        block = w[:, group]
        cov = block.T @ block / (len(w) - 1)
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


def test_multi_positive_infonce_known_answer():
    views = torch.eye(4).expand(3, 4, 4).clone()  # 3 identical views, orthogonal sentences
    # each anchor has 2 positives at cosine 1 among 8 candidates: p = e^20 / (2 e^20 + 6) per positive
    expected = -math.log(math.exp(20) / (2 * math.exp(20) + 6))
    assert multi_positive_infonce(views, 0.05).item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_finite_with_gradients_through_the_whitening():
    torch.manual_seed(0)
    a = torch.randn(16, 12, requires_grad=True)
    b = (a.detach() + 0.1 * torch.randn(16, 12)).requires_grad_()
    loss = LOSSES.get("whitenedcse")(None, group_size=4, num_views=3).compute_loss_from_embeddings([a, b])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_twins_beat_random_pairs():
    torch.manual_seed(0)
    a = torch.randn(32, 8)
    loss_fn = LOSSES.get("whitenedcse")(None, group_size=4)
    torch.manual_seed(1)
    matched = loss_fn.compute_loss_from_embeddings([a, a + 0.01 * torch.randn(32, 8)])
    torch.manual_seed(1)
    unmatched = loss_fn.compute_loss_from_embeddings([a, torch.randn(32, 8)])
    assert matched.item() < unmatched.item()


def test_batch_too_small_for_group_is_an_error():
    with pytest.raises(ConfigError, match="too small"):
        LOSSES.get("whitenedcse")(None, group_size=64).compute_loss_from_embeddings(
            [torch.randn(4, 128), torch.randn(4, 128)])
