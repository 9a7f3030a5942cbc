"""DebCSE: surface similarity, inverse propensity weights, false-negative removal."""

import math

import pytest
import torch

from densekit.training.losses import LOSSES
from densekit.training.losses.debcse import inverse_propensity_weights, token_indicators, token_jaccard


def test_token_jaccard_ignores_special_and_padding_tokens():
    features = {"input_ids": torch.tensor([[101, 5, 6, 102, 0], [101, 5, 7, 8, 102]]),
                "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])}
    bags = token_indicators(features, vocab_size=200, ignore_ids=torch.tensor([0, 101, 102]))
    sims = token_jaccard(bags, bags)
    assert sims[0, 1].item() == pytest.approx(1 / 4)  # {5, 6} vs {5, 7, 8}
    assert sims[0, 0].item() == sims[1, 1].item() == 1.0


def test_inverse_propensity_weights_known_answer():
    values = torch.tensor([[0.1], [0.15], [0.12], [0.9]])
    weights = inverse_propensity_weights(values, torch.ones(4, dtype=torch.bool), num_bins=5, max_weight=10)
    # propensities 3/4, 3/4, 3/4, 1/4 -> 1/p = 4/3 x3, 4 -> normalised to mean 1
    assert weights.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])


def test_invalid_entries_get_zero_weight_and_clipping_applies():
    values = torch.tensor([[0.1], [0.1], [0.1], [0.1], [0.9]])
    valid = torch.tensor([True, True, True, True, True])
    assert inverse_propensity_weights(values, valid, 5, max_weight=1.5)[-1].item() == 1.5
    valid[0] = False
    assert inverse_propensity_weights(values, valid, 5, 10)[0].item() == 0.0


def test_uniform_batch_reduces_to_simcse():
    # all negatives in one histogram cell and no surface information: every weight is 1
    x = torch.eye(4)
    debcse = LOSSES.get("debcse")(None).compute_loss_from_embeddings([x, x.clone()])
    simcse = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings([x, x.clone()])
    assert debcse.item() == pytest.approx(simcse.item(), rel=1e-6)


def test_false_negative_is_removed():
    # rows 0 and 1 are the same sentence: for SimCSE it is a negative at cosine 1, for DebCSE it is dropped
    x = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    debcse = LOSSES.get("debcse")(None, false_negative_threshold=0.9).compute_loss_from_embeddings([x, x.clone()])
    simcse = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings([x, x.clone()])
    # rows 0, 1: only negative is row 2 at cosine 0 -> log(1 + e^-20); row 2: two negatives at 0
    expected = (2 * math.log1p(math.exp(-20)) + math.log1p(2 * math.exp(-20))) / 3
    assert debcse.item() == pytest.approx(expected, abs=1e-7)
    assert simcse.item() > 0.4


def test_rare_hard_negatives_weigh_more():
    anchors = torch.eye(6)
    candidates = torch.eye(6).clone()
    candidates[1] = torch.nn.functional.normalize(torch.tensor([0.6, 0.8, 0, 0, 0, 0]), dim=0)
    loss_fn = LOSSES.get("debcse")(None, num_bins=5)
    weighted = loss_fn.compute_loss_from_embeddings([anchors, candidates])
    plain = LOSSES.get("simcse-unsup")(None).compute_loss_from_embeddings([anchors, candidates])
    assert weighted.item() > plain.item()  # the one similar negative (cos 0.6) is rare, so up-weighted


def test_sampling_keeps_k_negatives():
    torch.manual_seed(0)
    x = torch.eye(5)
    loss = LOSSES.get("debcse")(None, num_negatives=2).compute_loss_from_embeddings([x, x.clone()])
    assert loss.item() == pytest.approx(math.log1p(2 * math.exp(-20)), abs=1e-7)


def test_prepare_batch_uses_surface_overlap(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    loss_fn = LOSSES.get("debcse")(model)
    texts = ["the cat sat on the mat", "a dog ran in the park", "the cat sat on a mat"]
    features = [model.tokenize(texts), model.tokenize(texts)]
    loss_fn.prepare_batch(features)
    surface = loss_fn._surface
    assert surface.shape == (3, 3)
    assert surface[0, 0] == 1.0 and surface[0, 2] > surface[0, 1]
    loss = loss_fn(features)
    assert torch.isfinite(loss) and loss_fn._surface is None  # consumed by the batch
