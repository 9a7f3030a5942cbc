import json

import pytest

from densekit.data.beir import doc_text, load_beir, load_qrels
from densekit.data.training import read_training_records, to_hf_dataset
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
    examples = read_training_records(path)
    assert examples[0].negative_texts == ["n1", "n2"] and examples[0].weights == [1.0, 0.5]
    assert examples[0].negative_ids == ["7"] and examples[0].negatives[1].doc_id == "7"
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
        read_training_records(path)
    assert info.value.line == 2 and info.value.field == field


def test_training_hf_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"], "negative": ["c"]}).save_to_disk(tmp_path / "hf")
    examples = read_training_records(tmp_path / "hf")
    assert examples[0].query == "a" and examples[0].negative_texts == ["c"]


def test_a_mined_record_round_trips(tmp_path):
    """What densekit mine writes is read back into the same typed record, audit trail included."""
    from densekit.data.training import Negative, TrainingRecord
    from densekit.io import atomic_write_jsonl

    record = TrainingRecord("q", "p", [Negative("n", doc_id="d1", source="bm25", rank=3, score=1.5, teacher_score=0.2,
                                                weight=0.5, cluster=4)], query_id="q1", positive_id="d0",
                            audit={"positive_teacher_score": 0.9, "teacher": "cross-encoder",
                                   "dropped": [{"doc_id": "d9", "reason": "perc_pos"}]})
    atomic_write_jsonl(tmp_path / "m.jsonl", [record.to_json()])
    [back] = read_training_records(tmp_path / "m.jsonl")
    back.where = None
    assert back == record


@pytest.mark.parametrize(("negative", "field"), [
    ({"text": "n", "weight": 1.5}, "negatives[0].weight"),
    ({"text": "n", "weight": "heavy"}, "negatives[0].weight"),
    ({"text": "n", "rank": "first"}, "negatives[0].rank"),
    ({"text": "n", "doc_id": ["x"]}, "negatives[0].doc_id"),
])
def test_bad_audit_fields_name_the_field(tmp_path, negative, field):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query": "q", "positive": "p", "negatives": [negative]}) + "\n")
    with pytest.raises(DataError) as info:
        read_training_records(path)
    assert info.value.line == 1 and info.value.field == field
