"""densekit pseudo-queries on real SciFact documents, and mining them, with the query cut out of its positive or not."""

from __future__ import annotations

import pytest

from densekit.cli import main
from densekit.data.beir import load_beir
from densekit.data.documents import doc_text
from densekit.data.training import read_training_records
from densekit.mining.pseudo_queries import is_pseudo_query, without_query
from tests.helpers import scifact_subset


@pytest.fixture(scope="module")
def subset(scifact_dir, tmp_path_factory):
    return scifact_subset(scifact_dir, tmp_path_factory.mktemp("pq") / "scifact", n_queries=15, n_docs=200)


def test_without_query_cuts_the_first_copy_only():
    assert without_query("A title.", "A title. The abstract.") == "The abstract."
    assert without_query("Middle one.", "First. Middle one. Last.") == "First. Last."
    assert without_query("absent", "A text.") == "A text."
    assert without_query("All of it.", "All of it.") == "All of it."  # never an empty positive


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["title", "sentence"])
def test_pseudo_queries_are_mined_with_or_without_their_own_words(subset, tmp_path, strategy):
    folder = tmp_path / strategy
    assert main(["pseudo-queries", "--data", str(subset), "--strategy", strategy, "--include-split", "train",
                 "--output", str(folder)]) == 0
    made = load_beir(folder, "train")
    test_docs = {d for docs in load_beir(subset, "test").qrels.values() for d in docs}
    pseudo = {q: docs for q, docs in made.qrels.items() if is_pseudo_query(q)}
    real = load_beir(subset, "train")
    assert len(pseudo) > 100 and set(made.qrels) - set(pseudo) == set(real.qrels)
    for qid, docs in pseudo.items():  # one source document each, never one the test split judges
        (doc,) = docs
        assert doc not in test_docs and made.queries[qid] in doc_text(made.corpus[doc])

    for cut in (False, True):
        output = tmp_path / f"{strategy}-{cut}.jsonl"
        flags = ["--cut-pseudo-query-from-positive"] if cut else []
        assert main(["mine", "--data", str(folder), "--split", "train", "--retriever", "bm25", "--num-negatives", "2",
                     "--cache-dir", "none", "--output", str(output), *flags]) == 0
        records = read_training_records(output)
        mined_pseudo = [r for r in records if is_pseudo_query(r.query_id)]
        assert len(mined_pseudo) > 100
        for record in mined_pseudo:
            assert (record.query in record.positive) != cut, record.query_id
            assert record.positive.strip()
        for record in (r for r in records if not is_pseudo_query(r.query_id)):  # real queries: the whole document
            assert record.positive == doc_text(made.corpus[record.positive_id])
