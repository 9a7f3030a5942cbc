"""GradCache: the cached loss gives the same loss and parameter gradients as the uncached one."""

import pytest
import torch

from densekit.errors import ConfigError
from densekit.training.gradcache import GradCacheLoss
from densekit.training.losses import LOSSES

ANCHORS = [f"sentence number {i} is about topic {i % 3}" for i in range(10)]
POSITIVES = [f"a paraphrase of sentence {i} on topic {i % 3}" for i in range(10)]
NEGATIVES = [f"an unrelated remark {i}" for i in range(10)]
# the random tiny model puts every sentence at cosine > 0.9, so debcse's false-negative filter is loosened
OPTIONS = {"whitenedcse": {"num_groups": 8}, "mw": {"scale": 5.0},
           "debcse": {"false_negative_threshold": 0.9999}}


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    model.eval()  # no dropout: both paths must see the same network
    return model


def gradients(model, loss_fn, columns):
    model.zero_grad(set_to_none=True)
    features = [model.tokenize(texts) for texts in columns]
    torch.manual_seed(0)  # whitenedcse's channel shuffles, debcse's sampling
    loss = loss_fn(features, None)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("name", ["infonce", "simcse-unsup", "simcse-sup", "debcse", "whitenedcse", "mw"])
def test_cached_gradients_equal_uncached(model, name):
    columns = [ANCHORS, POSITIVES, NEGATIVES]
    if name in ("simcse-unsup", "whitenedcse"):
        columns = [ANCHORS, ANCHORS]
    loss_fn = LOSSES.get(name)(model, **OPTIONS.get(name, {}))
    plain_loss, plain = gradients(model, loss_fn, columns)
    cached_loss, cached = gradients(model, GradCacheLoss(loss_fn, mini_batch_size=3), columns)
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5, abs=1e-6)
    assert plain.keys() == cached.keys() and len(plain) > 10
    scale = max(g.abs().max().item() for g in plain.values())
    for key in plain:  # float32 mini-batch vs full-batch matmuls differ in the last bits: tolerance vs the scale
        assert torch.allclose(cached[key], plain[key], rtol=1e-4, atol=1e-4 * scale), key
    assert any(g.abs().sum() > 0 for g in plain.values())


def test_dropout_is_replayed_in_the_second_pass(tiny_model_dir):
    """In train mode the cached gradient must be the gradient of the loss it reported (same dropout masks)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    loss_fn = LOSSES.get("simcse-unsup")(model)
    cached = GradCacheLoss(loss_fn, mini_batch_size=4)
    features = [model.tokenize(ANCHORS), model.tokenize(ANCHORS)]
    torch.manual_seed(1)
    loss = cached(features)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    # recompute the same mini-batch embeddings under the same RNG sequence, with a graph
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    reps = [torch.cat([e for e, _ in cached.embed_minibatch_iter(f, with_grad=True, copy_random_state=False)])
            for f in features]
    replayed = loss_fn.compute_loss_from_embeddings(reps)
    replayed.backward()
    assert replayed.item() == pytest.approx(loss.item(), rel=1e-5)
    wanted = [p.grad for p in model.parameters() if p.grad is not None]
    scale = max(g.abs().max().item() for g in wanted)
    for got, want in zip(grads, wanted, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_no_grad_returns_plain_loss(model):
    loss_fn = LOSSES.get("infonce")(model)
    features = [model.tokenize(ANCHORS), model.tokenize(POSITIVES)]
    with torch.no_grad():
        cached = GradCacheLoss(loss_fn, mini_batch_size=4)(features)
        plain = loss_fn(features)
    assert cached.item() == pytest.approx(plain.item(), rel=1e-5)


def test_wrapping_errors():
    with pytest.raises(ConfigError, match="is not a DensekitLoss"):
        GradCacheLoss(torch.nn.Linear(2, 2))


@pytest.mark.integration
def test_train_cli_with_gradcache_on_sentences(tiny_model_dir, tmp_path):
    import json

    from densekit.cli import main

    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(f"line {i} of an unlabeled corpus about item {i % 7}" for i in range(24)) + "\n\n")
    out = tmp_path / "model"
    code = main(["train", "--model", tiny_model_dir, "--data", str(data), "--output", str(out),
                 "--loss", "simcse-unsup", "--gradcache", "--mini-batch-size", "4", "--batch-size", "12",
                 "--max-steps", "2"])
    assert code == 0
    info = json.loads((out / "densekit_train.json").read_text())
    assert info["options"]["gradcache"] and info["options"]["data_format"] == "auto"
    assert info["train_examples"] == 24 and info["global_step"] == 2
