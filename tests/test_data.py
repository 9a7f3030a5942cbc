import json

import pytest

from densekit.data.beir import doc_text, load_beir, load_qrels
from densekit.data.training import load_training_examples, to_hf_dataset
from densekit.errors import DataError
from tests.helpers import write_beir

CORPUS = {"d1": {"title": "T1", "text": "alpha beta"}, "d2": {"title": "", "text": "gamma"}}
QUERIES = {"q1": "alpha?", "q2": "gamma?"}


def test_load_beir_roundtrip_gz(tmp_path):
    folder = write_beir(tmp_path / "ds", CORPUS, QUERIES, {"test": {"q1": {"d1": 1}, "q2": {"d2": 2}}}, gz=True)
    ds = load_beir(folder, "test")
    assert set(ds.corpus) == {"d1", "d2"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert doc_text(ds.corpus["d1"]) == "T1 alpha beta"
    assert doc_text(ds.corpus["d2"]) == "gamma"


def test_real_scifact_loads(scifact_dir):
    ds = load_beir(scifact_dir, "test")
    assert len(ds.corpus) == 5183 and len(ds.qrels) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339


@pytest.mark.parametrize(("line", "field", "message"), [
    ('{"_id": "d3", "title": "x"}', "text", "missing field"),
    ('{"_id": "d3", "text": "  ", "title": ""}', "text", "empty text"),
    ('{"text": "no id"}', "_id", "missing field"),
    ('{"_id": "d3", "text": 5}', "text", "expected a string"),
    ('{"_id": "d1", "text": "dup"}', "_id", "duplicate"),
])
def test_bad_corpus_line_names_file_line_field(tmp_path, line, field, message):
    folder = write_beir(tmp_path / "ds", CORPUS, QUERIES, {"test": {"q1": {"d1": 1}}})
    with open(folder / "corpus.jsonl", "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(DataError) as info:
        load_beir(folder, "test")
    err = info.value
    assert err.line == 3 and err.field == field and err.path.endswith("corpus.jsonl")
    assert message in str(err) and "corpus.jsonl:3" in str(err)


def test_malformed_json_line(tmp_path):
    folder = write_beir(tmp_path / "ds", CORPUS, QUERIES, {"test": {"q1": {"d1": 1}}})
    with open(folder / "queries.jsonl", "a") as handle:
        handle.write('{"_id": "q3", "text": \n')
    with pytest.raises(DataError, match=r"queries.jsonl:3: invalid JSON"):
        load_beir(folder, "test")


def test_unknown_ids_in_qrels(tmp_path):
    folder = write_beir(tmp_path / "ds", CORPUS, QUERIES, {"test": {"q1": {"nope": 1}}})
    with pytest.raises(DataError) as info:
        load_beir(folder, "test")
    assert info.value.line == 2 and info.value.field == "corpus-id" and "unknown document id 'nope'" in str(info.value)
    folder = write_beir(tmp_path / "ds2", CORPUS, QUERIES, {"test": {"q9": {"d1": 1}}})
    with pytest.raises(DataError, match="unknown query id 'q9'"):
        load_beir(folder, "test")


def test_bad_qrels_score_and_columns(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\tx\n")
    with pytest.raises(DataError, match=r"q.tsv:2, field 'score'"):
        load_qrels(path)
    path.write_text("q1 d1 1\n")
    with pytest.raises(DataError, match="expected 3 tab-separated columns"):
        load_qrels(path)


def test_missing_split_lists_available(tmp_path):
    folder = write_beir(tmp_path / "ds", CORPUS, QUERIES, {"test": {"q1": {"d1": 1}}})
    with pytest.raises(DataError, match=r"no qrels for split 'dev' \(available: test\)"):
        load_beir(folder, "dev")


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_beir(str(tmp_path / "absent"), "test")


def test_training_jsonl_formats(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"query": "q", "positive": "p", "negatives": ["n1", {"text": "n2", "doc_id": "7", "weight": 0.5}]},
            {"anchor": "q2", "positive": "p2", "negatives": ["m1"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_training_examples(path)
    assert examples[0].negatives == ["n1", "n2"] and examples[0].weights == [1.0, 0.5]
    assert examples[1].query == "q2"
    ds = to_hf_dataset(examples, num_negatives=2)
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert ds[1]["negative_2"] == "m1"  # cycles through its own negatives


@pytest.mark.parametrize(("row", "field"), [
    ({"positive": "p"}, "query"),
    ({"query": "q"}, "positive"),
    ({"query": "q", "positive": ""}, "positive"),
    ({"query": "q", "positive": "p", "negatives": "n"}, "negatives"),
    ({"query": "q", "positive": "p", "negatives": [{"doc_id": "1"}]}, "negatives[0]"),
])
def test_training_bad_records(tmp_path, row, field):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query": "ok", "positive": "ok"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as info:
        load_training_examples(path)
    assert info.value.line == 2 and info.value.field == field


def test_training_hf_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"], "negative": ["c"]}).save_to_disk(tmp_path / "hf")
    examples = load_training_examples(tmp_path / "hf")
    assert examples[0].query == "a" and examples[0].negatives == ["c"]
