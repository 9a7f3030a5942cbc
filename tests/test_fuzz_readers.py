"""Bad input, fuzzed (Hypothesis): every reader of user files answers with a DataError / ConfigError that names
the file (and the line and field where there is one), or reads the file; never another exception, never a hang.

Two kinds of properties per reader:

* *mutations*: a valid file with one line broken in a known way (missing or mistyped field, bad UTF-8, an
  unpaired surrogate, duplicate id, deep nesting, a 5000-digit number, ...): the error names exactly that line
  and field;
* *garbage*: arbitrary bytes and arbitrary JSON values, gzipped or not, truncated or not: only our errors.

``HYPOTHESIS_PROFILE=long`` (scripts/faults/run_all.sh) runs 20x more examples than CI's profile.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densekit.errors import ConfigError, DataError, DensekitError

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEEP = "[" * 100_000 + "]" * 100_000
# JSON fragments that are not what a field wants; "\\ud800" is an unpaired surrogate once parsed
WRONG_VALUES = ["5", "2.5", "true", "null", "[]", "{}", '["a"]', '""', '"   "', '"\\ud800 x"', "1" * 5000, DEEP]
BAD_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80abc"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@contextlib.contextmanager
def file_with(content: bytes, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
        yield path


def lines(rows: list[str]) -> bytes:
    return "".join(row + "\n" for row in rows).encode("utf-8")


def only_our_errors(read, path: Path, *, line_count: int | None = None, kinds=(DataError,)):
    """Call ``read(path)``: it returns, or raises one of ``kinds`` naming ``path`` (and a line within the file)."""
    start = time.perf_counter()
    try:
        return read(path)
    except kinds as exc:
        if not str(exc).startswith("missing required option"):  # an option the file does not give at all
            assert str(path) in str(exc), f"the error does not name the file: {exc}"
        line = getattr(exc, "line", None)
        if line is not None and line_count is not None:
            assert 1 <= line <= line_count + 1, f"line {line} outside a {line_count}-line file: {exc}"
        return exc
    finally:
        assert time.perf_counter() - start < 30, "the reader took more than 30 s"


def break_line(valid: list[str], index: int, how: str, field: str, value: str) -> bytes:
    """The rows of ``valid`` with row ``index`` broken: ``field`` set to ``value``, removed, or its bytes spoiled."""
    obj = json.loads(valid[index])
    if how == "missing":
        obj.pop(field)
        row = json.dumps(obj).encode()
    elif how == "value":
        obj[field] = "@@"
        row = json.dumps(obj).replace('"@@"', value).encode()
    else:  # a bad byte inside the field's string
        obj[field] = "@@"
        row = json.dumps(obj).encode().replace(b"@@", b"ok" + value.encode("latin-1") + b"ok")
    rows = [r.encode() for r in valid]
    rows[index] = row
    return b"".join(r + b"\n" for r in rows)


# --- BEIR corpus, queries, qrels ------------------------------------------------------------------------------

def corpus_rows(n: int) -> list[str]:
    return [json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i}"}) for i in range(n)]


def expected_field_error(exc, line: int, field: str) -> None:
    assert isinstance(exc, DataError), f"no DataError: {exc!r}"
    assert exc.line == line, f"line {exc.line}, expected {line}: {exc}"
    if field is not None:
        assert exc.field == field, f"field {exc.field}, expected {field}: {exc}"


@given(n=st.integers(1, 6), data=st.data(), gz=st.booleans())
def test_corpus_mutations_name_line_and_field(n, data, gz):
    from densekit.data.beir import load_corpus

    valid = corpus_rows(n)
    index = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(["_id", "text"]))
    how = data.draw(st.sampled_from(["missing", "value", "bytes"]))
    value = data.draw(st.sampled_from(WRONG_VALUES if how != "bytes" else [b.decode("latin-1") for b in BAD_BYTES]))
    if how == "value" and (field, value) in (("_id", "5"), ("_id", "2.5"), ("text", '""'), ("text", '"   "')):
        return  # numeric ids are accepted (as strings); an empty text is fine when the title is not
    content = break_line(valid, index, how, field, value)
    with file_with(content, "corpus.jsonl.gz" if gz else "corpus.jsonl") as path:
        exc = only_our_errors(load_corpus, path, line_count=n)
        deep_or_huge = value in (DEEP, "1" * 5000)
        expected_field_error(exc, index + 1, None if how == "bytes" or deep_or_huge else field)


@given(n=st.integers(1, 5), dup=st.data())
def test_duplicate_ids_are_refused(n, dup):
    from densekit.data.beir import load_corpus, load_queries

    first = dup.draw(st.integers(0, n - 1))
    rows = corpus_rows(n) + [json.dumps({"_id": f"d{first}", "text": "again"})]
    with file_with(lines(rows), "corpus.jsonl") as path:
        expected_field_error(only_our_errors(load_corpus, path), n + 1, "_id")
    queries = [json.dumps({"_id": f"q{i}", "text": f"query {i}"}) for i in range(n)]
    queries.append(json.dumps({"_id": f"q{first}", "text": "again"}))
    with file_with(lines(queries), "queries.jsonl") as path:
        expected_field_error(only_our_errors(load_queries, path), n + 1, "_id")


@given(content=st.binary(max_size=400) | st.lists(json_values, max_size=5).map(
    lambda values: lines([json.dumps(v) for v in values])), name=st.sampled_from(
    ["corpus.jsonl", "corpus.jsonl.gz", "queries.jsonl"]), cut=st.integers(0, 50))
def test_beir_garbage_is_a_data_error_or_read(content, name, cut):
    from densekit.data.beir import load_corpus, load_queries

    read = load_corpus if name.startswith("corpus") else load_queries
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        data = gzip.compress(content) if name.endswith(".gz") else content
        path.write_bytes(data[:max(0, len(data) - cut)])  # sometimes a truncated file
        result = only_our_errors(read, path)
        if isinstance(result, dict):
            assert result and all(isinstance(k, str) for k in result)


@given(rows=st.lists(st.tuples(st.sampled_from(["q1", "q2", "qX", "", " "]),
                               st.sampled_from(["d0", "d1", "dX", ""]),
                               st.sampled_from(["1", "0", "2", "-1", "1.0", "x", "nan", "inf", "-inf", "1e400", ""])),
                     max_size=6),
       extra=st.sampled_from(["", "a\tb", "a\tb\tc\td\te", "\t\t", "query-id\tcorpus-id\tscore"]),
       bad_bytes=st.booleans())
def test_qrels_fuzz(rows, extra, bad_bytes):
    from densekit.data.beir import load_qrels

    corpus = {"d0": {}, "d1": {}}
    queries = {"q1": "a", "q2": "b"}
    body = "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows) + extra + "\n"
    content = body.encode() + (b"q1\td\xff1\t1\n" if bad_bytes else b"")
    with file_with(content, "test.tsv") as path:
        result = only_our_errors(lambda p: load_qrels(p, corpus, queries), path, line_count=len(rows) + 3)
        if isinstance(result, dict):  # read: every judgment names a known query and document
            assert all(q in queries and set(docs) <= set(corpus) for q, docs in result.items())


def test_qrels_naming_an_unknown_document_or_a_conflicting_score(tmp_path):
    from densekit.data.beir import load_qrels

    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n")
    with pytest.raises(DataError, match="unknown document id 'nope'") as info:
        load_qrels(path, {"d1": {}}, {"q1": "x"})
    assert (info.value.line, info.value.field) == (3, "corpus-id")
    path.write_text("q1\td1\t1\nq1\td1\t1\nq1\td1\t2\n")  # the same judgment twice is fine; two scores are not
    with pytest.raises(DataError, match="judges document 'd1' twice") as info:
        load_qrels(path)
    assert (info.value.line, info.value.field) == (3, "score")
    path.write_text("q1\td1\tinf\n")
    with pytest.raises(DataError, match="not a finite number"):
        load_qrels(path)


# --- training JSONL (what densekit mine writes) ---------------------------------------------------------------

def record_rows(n: int) -> list[str]:
    return [json.dumps({"query_id": f"q{i}", "query": f"question {i}", "positive_id": f"d{i}",
                        "positive": f"answer {i}", "negatives": [{"doc_id": f"n{i}", "text": f"neg {i}",
                                                                   "source": "bm25", "rank": 3, "score": 1.5}]})
            for i in range(n)]


@given(n=st.integers(1, 5), data=st.data())
def test_training_record_mutations_name_line_and_field(n, data):
    from densekit.data.training import read_training_records

    valid = record_rows(n)
    index = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(["query", "positive", "negatives", "query_id", "neg.text", "neg.rank",
                                       "neg.weight", "neg.doc_id", "neg.source", "neg.cluster"]))
    value = data.draw(st.sampled_from([v for v in WRONG_VALUES if v not in ("null",)] + ["1e400", "-0.5", "7"]))
    obj = json.loads(valid[index])
    if field.startswith("neg."):
        obj["negatives"][0][field[4:]] = "@@"
        expected = f"negatives[0].{field[4:]}"
    else:
        obj[field] = "@@"
        expected = field
    row = json.dumps(obj).replace('"@@"', value)
    rows = list(valid)
    rows[index] = row
    with file_with(lines(rows), "mined.jsonl") as path:
        result = only_our_errors(read_training_records, path, line_count=n)
        if isinstance(result, list):  # accepted: the value was valid for that field
            record = result[index]
            assert record.where == f"{path}:{index + 1}"
            json.dumps(record.to_json(), ensure_ascii=False).encode("utf-8")  # and it can be written back
            return
        if value in (DEEP, "1" * 5000):
            expected_field_error(result, index + 1, None)
        elif field == "negatives" and value in ("[]",):
            raise AssertionError("an empty negatives list is valid")  # pragma: no cover
        else:
            assert result.line == index + 1, result
            assert result.field in (expected, "negatives[0]", f"{expected}"), result


@given(values=st.lists(json_values, max_size=4), gz=st.booleans())
def test_training_garbage(values, gz):
    from densekit.data.training import read_training_records

    with file_with(lines([json.dumps(v) for v in values]), "t.jsonl.gz" if gz else "t.jsonl") as path:
        only_our_errors(read_training_records, path, line_count=len(values))


# --- NLI CSV and unlabeled text --------------------------------------------------------------------------------

@given(header=st.sampled_from(["sent0,sent1,hard_neg", "sent0,sent1", "sent1,hard_neg", "", "a"]),
       cells=st.lists(st.lists(st.text(max_size=12) | st.sampled_from(['"', '"a,b"', "\x00", "", " "]),
                               max_size=4), max_size=5),
       bad=st.sampled_from([b""] + BAD_BYTES), gz=st.booleans())
def test_nli_csv_fuzz(header, cells, bad, gz):
    from densekit.data.sentences import load_nli_triplets

    body = (header + "\n" + "".join(",".join(row) + "\n" for row in cells)).encode("utf-8") + bad
    with file_with(body, "nli.csv.gz" if gz else "nli.csv") as path:
        result = only_our_errors(load_nli_triplets, path)
        if isinstance(result, list):
            assert all(r.query.strip() and r.positive.strip() for r in result)


@given(content=st.binary(max_size=300), gz=st.booleans())
def test_unlabeled_text_fuzz(content, gz):
    from densekit.data.sentences import load_unlabeled_pairs

    with file_with(content, "s.txt.gz" if gz else "s.txt") as path:
        only_our_errors(load_unlabeled_pairs, path)


def test_bad_utf8_names_the_line(tmp_path):
    from densekit.data.sentences import load_nli_triplets, load_unlabeled_pairs

    path = tmp_path / "s.txt"
    path.write_bytes(b"one\ntwo\nth\xffree\n")
    with pytest.raises(DataError, match=r"s.txt:3: not valid UTF-8"):
        load_unlabeled_pairs(path)
    path = tmp_path / "n.csv"
    path.write_bytes(b"sent0,sent1\na,b\nc,\xc3d\n")
    with pytest.raises(DataError, match=r"n.csv:3: not valid UTF-8"):
        load_nli_triplets(path)


def test_huge_lines_are_read_or_refused_quickly(tmp_path):
    """A 20 MB document is read; a 20 MB CSV cell is over csv's field limit: a clear error, not a hang."""
    from densekit.data.beir import load_corpus
    from densekit.data.sentences import load_nli_triplets

    big = "word " * 4_000_000
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": big}) + "\n" + json.dumps({"_id": "d2", "text": "x"}) + "\n")
    start = time.perf_counter()
    assert len(load_corpus(corpus)["d1"]["text"]) == len(big)
    nli = tmp_path / "nli.csv"
    nli.write_text(f"sent0,sent1\n{big},x\n")
    with pytest.raises(DataError, match="field larger than field limit") as info:
        load_nli_triplets(nli)
    assert info.value.line == 2
    assert time.perf_counter() - start < 30


def test_corrupt_gzip_and_vanishing_files(tmp_path, monkeypatch):
    from densekit.data import beir
    from densekit.data.beir import load_beir, load_corpus

    path = tmp_path / "corpus.jsonl.gz"
    data = bytearray(gzip.compress(lines(corpus_rows(200))))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corpus.jsonl.gz"):
        load_corpus(path)
    # the file is found, then disappears before it is opened (another job cleaning up)
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("\n".join(corpus_rows(2)) + "\n")
    real_find = beir._find

    def find_then_delete(where, stem):
        found = real_find(where, stem)
        found.unlink()
        return found

    monkeypatch.setattr(beir, "_find", find_then_delete)
    with pytest.raises(DataError, match="corpus.jsonl: file not found"):
        load_beir(folder, split=None)
    monkeypatch.undo()
    with pytest.raises(DataError, match="cannot open file"):
        load_corpus(folder)  # a folder where a file is expected


# --- YAML configs through the CLI's load_config / resolve ------------------------------------------------------

def _command_keys() -> dict[str, list[str]]:
    from densekit import options
    from densekit.cli import commands

    keys = {}
    for name in ("mine", "index", "search", "eval", "serve", "train"):
        module = commands()[name]
        fields = [f for cls in module.OPTIONS for f in options.option_fields(cls)
                  if options.META_KEY in f.metadata]
        keys[name] = sorted({options.flag_of(f).lstrip("-") for f in fields})
    return keys


COMMAND_KEYS = _command_keys()
yaml_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=10)
                | st.sampled_from(["1" * 5000, ".inf", ".nan", "2024-01-01", "!!binary aGk=", "!!python/none ''",
                                   "&a [*a]", "'\\ud800'", "torch", "flat", "bm25", "top", "none"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _yaml_text(mapping: dict) -> str:
    """Hand-written YAML, so that raw YAML spellings (tags, anchors, huge ints) reach the parser as they are."""
    out = []
    for key, value in mapping.items():
        if isinstance(value, str) and value[:1] in ("!", "&", "'", ".") or value in ("1" * 5000, "2024-01-01"):
            out.append(f"{key}: {value}")
        else:
            out.append(f"{key}: {json.dumps(value)}")  # JSON is YAML
    return "\n".join(out) + "\n"


@given(command=st.sampled_from(sorted(COMMAND_KEYS)), data=st.data(), sectioned=st.booleans())
def test_yaml_config_fuzz(command, data, sectioned):
    from densekit.cli import commands, resolve

    keys = COMMAND_KEYS[command] + ["no-such-option"]
    mapping = data.draw(st.dictionaries(st.sampled_from(keys), yaml_values, max_size=4))
    text = _yaml_text(mapping)
    if sectioned:
        text = f"{command}:\n" + "".join(f"  {line}\n" for line in text.splitlines())
    with file_with(text.encode("utf-8"), "config.yaml") as path:
        parsed = argparse.Namespace(command=command, config=str(path), log_level="INFO")
        only_our_errors(lambda p: resolve(commands()[command], parsed), path, kinds=(DensekitError,))


@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_yaml_garbage(content):
    from densekit.cli import load_config

    with file_with(content, "config.yaml") as path:
        only_our_errors(lambda p: load_config(str(p), "mine"), path, kinds=(ConfigError,))


@pytest.mark.parametrize("text", ["batch_size: " + "1" * 5000, "a: " + "[" * 5000, "- [1, 2]\n- 3", "\tbad: tab"])
def test_yaml_edge_cases_are_config_errors(tmp_path, text):
    from densekit.cli import load_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(str(path), "mine")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path), "mine")
