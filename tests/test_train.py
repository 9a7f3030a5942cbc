"""``densekit train``: the written model, resume, the options each mode accepts, and what the options do."""

import json

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from densekit.errors import ConfigError
from densekit.training.config import TrainConfig
from densekit.training.train import build_trainer, train


def write_data(path, n=24, weights=None):
    rows = []
    for i in range(n):
        negatives = [f"unrelated text {i + 1}", f"other text {i + 2}"]
        if weights is not None:
            negatives = [{"text": t, "weight": w} for t, w in zip(negatives, weights, strict=True)]
        rows.append({"query_id": f"q{i}", "query": f"question number {i} about topic {i % 5}",
                     "positive": f"answer {i} on topic {i % 5}", "negatives": negatives})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(model, data, output, **values) -> TrainConfig:
    return TrainConfig.from_options(model=model, data=str(data), output=str(output), **values)


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_train_writes_loadable_model_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from densekit.training.modes.static import StaticMode

    data = write_data(tmp_path / "train.jsonl")
    cfg = config(tiny_model_dir, data, tmp_path / "out", max_steps=5, batch_size=4, save_steps=2, logging_steps=1)
    real_setup = StaticMode.setup

    def interrupted(self, inputs):
        setup = real_setup(self, inputs)
        setup.callbacks.append(Interrupt())
        return setup

    monkeypatch.setattr(StaticMode, "setup", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()  # nothing half-written where the model goes
    assert (tmp_path / "out.checkpoints" / "checkpoint-2").is_dir()

    path = train(cfg)
    info = json.loads((path / "densekit_train.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["global_step"] == 5
    assert not (tmp_path / "out.checkpoints").exists()
    model = SentenceTransformer(str(path), device="cpu")
    assert model.encode(["hello"]).shape == (1, 32)
    # the model card is sentence-transformers' own, with densekit's settings added; the curves are beside it
    card = (path / "README.md").read_text()
    assert "sentence-transformers" in card and "## densekit" in card and "per_device_train_batch_size: 4" in card
    assert (path / "training_curves.png").stat().st_size > 1000
    history = json.loads((path / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4, 5]


def test_unknown_loss_and_option(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl", 4)
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        train(config(tiny_model_dir, data, tmp_path / "o", loss="nope"))
    with pytest.raises(ConfigError, match="has no option"):
        train(config(tiny_model_dir, data, tmp_path / "o", loss_option={"tau": 1}))
    with pytest.raises(ConfigError, match="unknown option 'batch_sise'"):
        config(tiny_model_dir, data, tmp_path / "o", batch_sise=4)


@pytest.mark.parametrize("values, flag", [
    ({"refresh_steps": 5}, "--refresh-steps does not apply to --mode static"),
    ({"adore_depth": 50}, "--adore-depth does not apply to --mode static"),
    ({"mode": "star", "beir": "x", "negative_weights": True}, "--negative-weights does not apply to --mode star"),
    ({"mode": "adore", "beir": "x", "data": None, "gradcache": True}, "--gradcache does not apply to --mode adore"),
    ({"mode": "adore", "beir": "x", "data": None, "cluster_batches": "auto"},
     "--cluster-batches does not apply to --mode adore"),
    ({"mode": "adore", "beir": "x", "data": None, "refresh_fraction": 0.5},
     "--refresh-fraction does not apply to --mode adore"),
    ({"mode": "adore", "beir": "x", "loss": "infonce", "data": None}, "trains with its own loss"),
])
def test_a_mode_refuses_options_it_would_ignore(tiny_model_dir, tmp_path, values, flag):
    from densekit.training.modes import get_mode

    values = {"data": str(tmp_path / "d.jsonl"), **values}
    cfg = TrainConfig.from_options(model=tiny_model_dir, output=str(tmp_path / "o"), **values)
    with pytest.raises(ConfigError, match=flag):
        get_mode(cfg.mode.mode).check(cfg)


def test_negative_weights_reach_the_loss(tiny_model_dir, tmp_path):
    """The mined weights become the loss's table (row = example), and a weight of 0 removes that negative."""
    data = write_data(tmp_path / "weighted.jsonl", 12, weights=[0.0, 1.0])
    run = build_trainer(config(tiny_model_dir, data, tmp_path / "w", max_steps=2, batch_size=4,
                               negative_weights=True))
    loss = run.setup.loss
    table = loss.context.negative_weights
    assert table.shape == (12, 2) and torch.equal(table, torch.tensor([[0.0, 1.0]] * 12))
    assert run.setup.dataset["label"] == list(range(12))  # the row index reaches the loss as labels
    # the same batch scored with and without its weights: dropping negative 1 lowers the loss
    batch = run.trainer.data_collator([run.setup.dataset[i] for i in range(4)])
    features, labels = run.trainer.collect_features(batch)
    with torch.no_grad():
        weighted = loss(features, labels).item()
        loss.context.negative_weights = None
        plain = loss(features, labels).item()
    assert weighted < plain
    info = json.loads((train(config(tiny_model_dir, data, tmp_path / "w2", max_steps=2, batch_size=4,
                                    negative_weights=True)) / "densekit_train.json").read_text())
    assert info["global_step"] == 2 and info["options"]["negative_weights"] is True
    with pytest.raises(ConfigError, match="no per-negative 'weight'"):
        train(config(tiny_model_dir, write_data(tmp_path / "plain.jsonl", 8), tmp_path / "p", max_steps=1,
                     negative_weights=True))


def test_cluster_batches_hold_cluster_mates(tiny_model_dir, tmp_path):
    """The trainer's batches come from one k-means cluster each (a cluster that runs out spills into the next)."""
    data = write_data(tmp_path / "train.jsonl", 40)
    run = build_trainer(config(tiny_model_dir, data, tmp_path / "out", max_steps=3, batch_size=8,
                               cluster_batches="auto", loss_option={"false_negative_margin": 0.1}))
    factory = run.trainer.args.batch_sampler
    labels = np.array(factory.labels)
    sampler = run.trainer.get_train_dataloader().batch_sampler
    batches = list(sampler)
    assert len(batches) == len(sampler) and sorted(i for b in batches for i in b) == list(range(40))
    impure = [b for b in batches if len(set(labels[b])) > 1]
    # with k clusters visited along a chain, at most k - 1 batches straddle two clusters
    assert len(impure) <= len(set(labels)) - 1
    assert all(len(set(labels[b])) <= 2 for b in batches)
    info = json.loads((train(run.config) / "densekit_train.json").read_text())
    assert info["global_step"] == 3 and info["options"]["cluster_batches"] == "auto"
    with pytest.raises(ConfigError, match="cluster_batches must be"):
        config(tiny_model_dir, data, tmp_path / "o2", cluster_batches="many")


def test_whitenedcse_drops_a_short_last_batch(tiny_model_dir, tmp_path):
    # 25 sentences at batch 20: the last batch of 5 is too small to whiten the 32 channels of the tiny model
    data = tmp_path / "sentences.txt"
    data.write_text("".join(f"sentence number {i} about topic {i % 7}\n" for i in range(25)))
    path = train(config(tiny_model_dir, data, tmp_path / "w", loss="whitenedcse", epochs=1.0, batch_size=20))
    assert json.loads((path / "densekit_train.json").read_text())["global_step"] == 1
    cached = train(config(tiny_model_dir, data, tmp_path / "g", loss="whitenedcse", epochs=1.0, batch_size=20,
                          gradcache=True, mini_batch_size=8))
    assert json.loads((cached / "densekit_train.json").read_text())["global_step"] == 1


def test_global_batch_size_sets_the_per_device_batch(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl", 24)
    run = build_trainer(config(tiny_model_dir, data, tmp_path / "o", global_batch_size=12,
                               gradient_accumulation_steps=3, max_steps=1))
    assert run.trainer.args.per_device_train_batch_size == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        build_trainer(config(tiny_model_dir, data, tmp_path / "o", global_batch_size=10,
                             gradient_accumulation_steps=3))


def test_b3_batches_join_communities_of_mutually_hard_examples(tiny_model_dir, tmp_path):
    """--cluster-method b3: METIS communities of the preference graph; each batch joins batch / K of them."""
    from densekit.training.b3 import b3_communities, preference_edges

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    edges = preference_edges(emb, emb, (3, 6))
    sims = emb @ emb.T
    window = {i: {int(j) for j in [k for k in np.argsort(-sims[i]) if k != i][2:6]} for i in range(40)}
    for i in range(40):  # ranks 3..6 become edges, both ways; the top 2 only if the other row ranks i 3..6
        assert window[i] <= edges[i]
        assert edges[i] == window[i] | {j for j in range(40) if i in window[j]}
    labels = b3_communities(emb, emb, (3, 6), community=8)
    assert len(set(labels.tolist())) == 5 and all(np.bincount(labels) >= 5)
    data = write_data(tmp_path / "train.jsonl", 40)
    run = build_trainer(config(tiny_model_dir, data, tmp_path / "out", max_steps=2, batch_size=16,
                               cluster_batches="auto", cluster_method="b3", b3_community=8))
    groups = np.array(run.trainer.args.batch_sampler.labels)
    batches = list(run.trainer.get_train_dataloader().batch_sampler)
    assert all(len(set(groups[b])) <= 16 // 8 + 1 for b in batches)  # 2 communities a batch (+ one spilling over)
    assert json.loads((train(run.config) / "densekit_train.json").read_text())["options"]["cluster_method"] == "b3"
