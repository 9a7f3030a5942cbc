"""The CLI's own behaviour: YAML configs, and clean errors instead of tracebacks."""

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
    import yaml

    from densekit.cli import build_parser, load_yaml_config

    _, subparsers = build_parser()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"mine": {"data": "d", "output": "o", "window": [5, 9], "num-negatives": 2},
                                   "train": {"epochs": 3}}))
    values = load_yaml_config(str(cfg), "mine", subparsers["mine"])
    assert values == {"data": "d", "output": "o", "window": [5, 9], "num_negatives": 2}
    with pytest.raises(Exception, match="expects int"):
        cfg.write_text("num_negatives: lots\n")
        load_yaml_config(str(cfg), "mine", subparsers["mine"])
