import json

import pytest
from transformers import TrainerCallback

from densekit.errors import ConfigError
from densekit.training.train import TrainArgs, train


def write_data(path, n=24):
    rows = [{"query": f"question number {i} about topic {i % 5}", "positive": f"answer {i} on topic {i % 5}",
             "negatives": [f"unrelated text {i + 1}", f"other text {i + 2}"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_train_writes_loadable_model_and_resumes(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    data = write_data(tmp_path / "train.jsonl")
    args = TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "out"), max_steps=5,
                     batch_size=4, save_steps=2, logging_steps=1, callbacks=[Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        train(args)
    assert not (tmp_path / "out").exists()  # nothing half-written where the model goes
    assert (tmp_path / "out.checkpoints" / "checkpoint-2").is_dir()

    args.callbacks = []
    path = train(args)
    info = json.loads((path / "densekit_train.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["global_step"] == 5
    assert not (tmp_path / "out.checkpoints").exists()
    model = SentenceTransformer(str(path), device="cpu")
    assert model.encode(["hello"]).shape == (1, 32)


def test_unknown_loss_and_option(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl", 4)
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "o"), loss="nope"))
    with pytest.raises(ConfigError, match="has no option"):
        train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "o"), loss_options={"tau": 1}))


def test_cluster_batches_train_and_bad_setting(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl", 24)
    args = TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "out"), max_steps=3,
                     batch_size=8, cluster_batches="auto", loss_options={"false_negative_margin": 0.1})
    info = json.loads((train(args) / "densekit_train.json").read_text())
    assert info["global_step"] == 3 and info["args"]["cluster_batches"] == "auto"
    with pytest.raises(ConfigError, match="cluster_batches must be"):
        train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "o2"), cluster_batches="many"))


def test_negative_weights_from_a_mined_file(tiny_model_dir, tmp_path):
    rows = [{"query": f"question {i}", "positive": f"answer {i}",
             "negatives": [{"text": f"other {i}", "weight": 0.5}, {"text": f"more {i}", "weight": 1.0}]}
            for i in range(12)]
    data = tmp_path / "weighted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "w"),
                                       max_steps=2, batch_size=4, negative_weights=True)) / "densekit_train.json")
                      .read_text())
    assert info["global_step"] == 2
    with pytest.raises(ConfigError, match="no per-negative 'weight'"):
        train(TrainArgs(model=tiny_model_dir, data=str(write_data(tmp_path / "plain.jsonl", 8)),
                        output=str(tmp_path / "p"), max_steps=1, negative_weights=True))


def test_whitenedcse_drops_a_short_last_batch(tiny_model_dir, tmp_path):
    # 25 sentences at batch 20: the last batch of 5 is too small to whiten the 32 channels of the tiny model
    data = tmp_path / "sentences.txt"
    data.write_text("".join(f"sentence number {i} about topic {i % 7}\n" for i in range(25)))
    path = train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "w"), loss="whitenedcse",
                           epochs=1.0, batch_size=20))
    assert json.loads((path / "densekit_train.json").read_text())["global_step"] == 1
    cached = train(TrainArgs(model=tiny_model_dir, data=str(data), output=str(tmp_path / "g"), loss="whitenedcse",
                             epochs=1.0, batch_size=20, gradcache=True, mini_batch_size=8))
    assert json.loads((cached / "densekit_train.json").read_text())["global_step"] == 1
