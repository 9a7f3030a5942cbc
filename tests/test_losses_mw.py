"""MW (AUC) loss and the Mann-Whitney AUC on tiny inputs with known answers."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densekit.errors import ConfigError
from densekit.training.losses import LOSSES
from densekit.training.losses.mw import mann_whitney_auc, negative_mask


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_perfect_separation_gives_near_zero_loss():
    q = torch.eye(4)
    loss = LOSSES.get("mw")(None, scale=20.0).compute_loss_from_embeddings([q, q.clone(), -q.clone()])
    # positives at cosine 1, in-batch negatives at 0, hard negatives at <= 0: softplus(-20) is the worst term
    assert loss.item() < math.log1p(math.exp(-20)) + 1e-9


def test_tied_scores_give_log_two():
    x = torch.ones(3, 4)
    loss = LOSSES.get("mw")(None).compute_loss_from_embeddings([x, x.clone(), x.clone()])
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_per_query_matches_hand_computed_mean_over_each_rows_pairs():
    q = unit([1, 0], [0, 1])
    p = unit([1, 1], [0, 1])
    n = unit([1, -1], [1, 0])
    scale = 3.0
    s = (q @ torch.cat([p, n]).T).numpy()
    # row 0: positive s[0,0]; negatives: in-batch s[0,1] and hard negatives s[0,2], s[0,3]; same for row 1
    pairs = [(s[0, 0], s[0, 1]), (s[0, 0], s[0, 2]), (s[0, 0], s[0, 3]),
             (s[1, 1], s[1, 0]), (s[1, 1], s[1, 2]), (s[1, 1], s[1, 3])]
    expected = np.mean([np.log1p(np.exp(-scale * (a - b))) for a, b in pairs])
    loss = LOSSES.get("mw")(None, scale=scale, comparison="per_query").compute_loss_from_embeddings([q, p, n])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_global_mw_equals_the_brute_force_sum_over_every_positive_and_negative_pair():
    """Every query's positive against every negative (query, document) score of the batch, across queries."""
    rng = np.random.default_rng(0)
    q, p, n1, n2 = (F.normalize(torch.tensor(rng.normal(size=(3, 5))), dim=-1) for _ in range(4))
    scale = 7.0
    candidates = torch.cat([p, n1, n2])
    s = (q @ candidates.T).numpy()
    positives = [s[i, i] for i in range(3)]
    negatives = [s[i, j] for i in range(3) for j in range(9) if j != i]  # other rows' positives, all hard negatives
    expected = np.mean([np.log1p(np.exp(-scale * (a - b))) for a in positives for b in negatives])
    loss = LOSSES.get("mw")(None, scale=scale).compute_loss_from_embeddings([q, p, n1, n2])
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    per_query = LOSSES.get("mw")(None, scale=scale, comparison="per_query").compute_loss_from_embeddings([q, p, n1, n2])
    assert abs(loss.item() - per_query.item()) > 1e-4  # the cross-query comparisons make it another loss


def test_negative_mask_switches():
    assert negative_mask(2, 3, in_batch=True, hard=True).tolist() == [[False, True, True, True],
                                                                      [True, False, True, True]]
    assert negative_mask(2, 3, in_batch=False, hard=True).tolist() == [[False, False, True, False],
                                                                       [False, False, False, True]]
    assert negative_mask(2, 3, in_batch=True, hard=False).tolist() == [[False, True, False, False],
                                                                       [True, False, False, False]]


def test_no_negatives_is_an_error():
    with pytest.raises(ConfigError):
        LOSSES.get("mw")(None, in_batch_negatives=False, hard_negatives=False)
    with pytest.raises(ConfigError, match="no negatives"):
        LOSSES.get("mw")(None, hard_negatives=True, in_batch_negatives=False).compute_loss_from_embeddings(
            [torch.ones(1, 4), torch.ones(1, 4)])


def test_gradient_pushes_positive_up_and_negative_down():
    q = unit([1, 0.2])
    p = unit([0.5, 1]).requires_grad_()
    n = unit([1, 0]).requires_grad_()
    loss = LOSSES.get("mw")(None, in_batch_negatives=False).compute_loss_from_embeddings([q, p, n])
    loss.backward()
    assert (p.grad @ q.T).item() < 0 < (n.grad @ q.T).item()  # descent raises <q,p>, lowers <q,n>


def test_mann_whitney_auc_known_values():
    assert mann_whitney_auc([3, 2], [1, 2.5]) == pytest.approx(0.75)
    assert mann_whitney_auc([1, 1], [1]) == pytest.approx(0.5)  # ties count one half
    assert mann_whitney_auc([5], [1, 2, 3]) == 1.0
    with pytest.raises(ValueError):
        mann_whitney_auc([], [1])
