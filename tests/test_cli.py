"""The CLI's own behaviour: YAML configs, and clean errors instead of tracebacks."""

from pathlib import Path

import pytest

from densekit.cli import main
from tests.helpers import write_beir


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("data: x\noutput: y\nwindoww: [1, 2]\n")
    assert main(["mine", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml: unknown option 'windoww'" in err and "Traceback" not in err


def test_invalid_yaml_names_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: x\noutput: [unclosed\n")
    assert main(["eval", "--config", str(cfg)]) == 2
    assert "bad.yaml:" in capsys.readouterr().err


def test_bad_data_error_is_clean(tmp_path, capsys):
    folder = write_beir(tmp_path / "ds", {"d1": {"text": "x"}}, {"q1": "x"}, {"train": {"q1": {"d1": 1}}})
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2"}\n')
    assert main(["mine", "--data", str(folder), "--retriever", "bm25", "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl:2, field 'text': missing field" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_yaml_values_and_flag_override(tmp_path):
    import argparse

    import yaml

    from densekit.cli import commands, load_config, resolve
    from densekit.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"mine": {"data": "d", "output": "o", "window": [5, 9], "num-negatives": 2,
                                            "no-refill": True, "retriever-option": {"bm25.k1": 1.2}},
                                   "train": {"epochs": 3}}))
    assert load_config(str(cfg), "mine")["window"] == [5, 9]
    module = commands()["mine"]
    files, mine, denoise, encoder, scale = resolve(module, argparse.Namespace(command="mine", config=str(cfg),
                                                                              log_level="INFO", num_negatives=7))
    assert (files.data, files.output) == ("d", "o")
    assert mine.window == (5, 9) and mine.num_negatives == 7  # the flag wins over the file
    assert mine.retriever_options == {"bm25": {"k1": 1.2}} and denoise.refill is False
    assert encoder.batch_size == 64 and scale.memory_budget == "1GB"
    cfg.write_text("num_negatives: lots\n")
    with pytest.raises(ConfigError, match="'--num-negatives' expects int"):
        resolve(module, argparse.Namespace(command="mine", config=str(cfg), log_level="INFO"))


def test_train_flags_and_yaml_reach_the_trainer(tmp_path):
    """densekit's own train options and the trainer's (TrainingArguments) come from the same flags and keys."""
    import yaml

    from densekit.cli import build_parser, commands, resolve

    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"model": "m", "data": "d.jsonl", "output": "o", "batch-size": 16,
                                             "epochs": 2, "report_to": "none", "loss-option": {"scale": 30}}}))
    parsed = build_parser().parse_args(["train", "--config", str(cfg), "--lr", "1e-4", "--max_steps", "7",
                                        "--mode", "ance", "--refresh-window", "1", "20"])
    groups = {type(g).__name__: g for g in resolve(commands()["train"], parsed)}
    trainer = groups["TrainerOptions"]
    assert (trainer.per_device_train_batch_size, trainer.num_train_epochs, trainer.learning_rate,
            trainer.max_steps) == (16, 2.0, 1e-4, 7)
    assert groups["LossOptions"].loss_options == {"scale": 30}
    assert groups["AnceOptions"].refresh_window == (1, 20) and groups["ModeOptions"].mode == "ance"


def test_missing_required_option_is_named(capsys):
    assert main(["index", "--model", "m", "--data", "d"]) == 2
    assert "missing required option --output" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
    """Every section of every config in configs/ is read into its command's options without an error."""
    import argparse

    import yaml

    from densekit import cli

    sections = yaml.safe_load(path.read_text())
    assert sections and set(sections) <= set(cli.commands())
    for command in sections:
        parsed = argparse.Namespace(config=str(path), command=command, log_level="info")
        assert cli.resolve(cli.commands()[command], parsed)
