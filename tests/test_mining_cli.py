"""``densekit mine`` wiring: strategies chosen by flags or a YAML config, errors printed without a traceback."""

from __future__ import annotations

import gzip
import json

import pytest
import yaml

from densekit.cli import main
from densekit.data.beir import load_beir
from densekit.data.training import read_training_records


@pytest.fixture(scope="module")
def beir_folder(scifact_dir, tmp_path_factory):
    """Six SciFact train queries and 120 documents, written as a BEIR folder."""
    full = load_beir(scifact_dir, "train")
    qids = sorted(full.qrels)[:6]
    positives = sorted({d for q in qids for d in full.qrels[q]})
    docs = positives + [d for d in full.corpus if d not in positives][:120]
    folder = tmp_path_factory.mktemp("beir") / "mini"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        for d in docs:
            handle.write(json.dumps({"_id": d, **full.corpus[d]}) + "\n")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": full.queries[q]}) + "\n"
                                                  for q in qids))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q in qids for d in full.qrels[q]))
    return folder


def test_yaml_config_combines_strategies(beir_folder, tiny_model_dir, tmp_path, capsys):
    config = {"mine": {
        "data": str(beir_folder), "model": tiny_model_dir, "cache_dir": str(tmp_path / "cache"),
        "retriever": ["bm25", "hybrid"], "retriever_option": {"hybrid.fusion": "score"},
        "sampler": "star", "sampler_option": {"hard_ratio": 0.5}, "num_negatives": 4, "window": [1, 20],
        "teacher": "cross-encoder", "teacher_option": {"max_seq_length": 96, "backend": "onnx"},
        "perc_pos": 0.95, "soft_weights": True}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "negatives.jsonl"
    assert main(["mine", "--config", str(path), "--output", str(out)]) == 0
    assert "records" in capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all("positive_teacher_score" in r for r in records)
    sources = {n["source"] for r in records for n in r["negatives"]}
    assert sources <= {"bm25", "hybrid", "random"} and "random" in sources
    assert all("weight" in n and "teacher_score" in n for r in records for n in r["negatives"])
    # densekit train reads the file as is, soft weights included
    examples = read_training_records(out)
    assert len(examples) == len(records) and all(e.weights and len(e.weights) == len(e.negatives) for e in examples)


@pytest.mark.parametrize("flags, message", [
    (["--retriever", "bm99"], "unknown candidate retriever 'bm99'"),
    (["--retriever", "bm25", "--sampler", "star", "--sampler-option", "ratio=0.5"], "sampler 'star' has no option"),
    (["--retriever", "bm25", "--perc-pos", "0.9"], "need a teacher"),
])
def test_bad_options_exit_2_with_a_clear_message(beir_folder, tmp_path, capsys, flags, message):
    code = main(["mine", "--data", str(beir_folder), "--output", str(tmp_path / "x.jsonl"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_backend_flag_mines_with_the_onnx_encoder(beir_folder, tiny_model_dir, tmp_path):
    out = tmp_path / "neg.jsonl"
    cache = tmp_path / "cache"
    assert main(["mine", "--data", str(beir_folder), "--model", tiny_model_dir, "--retriever", "dense",
                 "--backend", "onnx-int8", "--num-negatives", "2", "--window", "1", "20", "--cache-dir", str(cache),
                 "--output", str(out)]) == 0
    pairs = sum(len(rels) for rels in load_beir(beir_folder, "train").qrels.values())
    assert len(read_training_records(out)) == pairs
    assert [p.parent.name.endswith("-onnx-int8") for p in (cache / "onnx").glob("*/model.onnx")] == [True]
