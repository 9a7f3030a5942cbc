"""SimCSE losses on tiny embeddings with known answers."""

import math

import pytest
import torch

from densekit.errors import ConfigError
from densekit.training.losses import LOSSES


def one_hot(n: int, dim: int = 8) -> torch.Tensor:
    return torch.eye(dim)[:n]


def test_registered_with_paper_temperature():
    unsup = LOSSES.get("simcse-unsup")(None)
    sup = LOSSES.get("simcse-sup")(None)
    assert unsup.temperature == sup.temperature == 0.05


def test_unsup_identical_twins_orthogonal_batch_is_near_zero():
    x = one_hot(4)
    loss = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings([x, x.clone()])
    # positive logit 1/0.05 = 20 against three logits of 0: loss = log(1 + 3 e^-20)
    assert loss.item() == pytest.approx(math.log1p(3 * math.exp(-20)), abs=1e-7)


def test_unsup_collapsed_embeddings_give_log_batch_size():
    x = torch.ones(5, 8)
    loss = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings([x, x.clone()])
    assert loss.item() == pytest.approx(math.log(5), rel=1e-6)


def test_unsup_equals_infonce_at_scale_20():
    torch.manual_seed(0)
    emb = [torch.randn(6, 16), torch.randn(6, 16)]
    simcse = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings(emb)
    infonce = LOSSES.get("infonce")(None, scale=20.0).compute_loss_from_embeddings(emb)
    assert simcse.item() == pytest.approx(infonce.item(), rel=1e-5)


def test_sup_counts_every_contradiction_as_negative():
    x = torch.ones(3, 8)
    loss = LOSSES.get("simcse-sup")(None).compute_loss_from_embeddings([x, x.clone(), x.clone()])
    assert loss.item() == pytest.approx(math.log(6), rel=1e-6)  # 3 positives + 3 hard negatives, all tied


def test_sup_hard_negative_weight_raises_own_contradiction_logit():
    x = torch.ones(3, 8)
    loss_fn = LOSSES.get("simcse-sup")(None, hard_negative_weight=math.log(2.0))
    loss = loss_fn.compute_loss_from_embeddings([x, x.clone(), x.clone()])
    # tied logits, own contradiction weighted x2: denominator 3 + 2 + 2 = 7
    assert loss.item() == pytest.approx(math.log(7), rel=1e-6)


def test_sup_needs_the_negative_column():
    with pytest.raises(ConfigError, match="3 input columns"):
        LOSSES.get("simcse-sup")(None).compute_loss_from_embeddings([one_hot(2), one_hot(2)])


def test_temperature_must_be_positive():
    with pytest.raises(ConfigError):
        LOSSES.get("simcse-unsup")(None, temperature=0)
