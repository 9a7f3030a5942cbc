"""Sentence training data: unlabeled lines -> (s, s), NLI CSV -> triplets."""

import pytest

from densekit.data.sentences import detect_format, load_nli_triplets, load_unlabeled_pairs
from densekit.data.training import read_training_data
from densekit.errors import DataError


def test_unlabeled_lines_become_twin_pairs(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("first sentence\n\n  second one  \n")
    examples = load_unlabeled_pairs(path)
    assert [(e.query, e.positive, e.negative_texts) for e in examples] == [
        ("first sentence", "first sentence", []), ("second one", "second one", [])]
    assert len(load_unlabeled_pairs(path, max_sentences=1)) == 1


def test_empty_text_file_is_an_error(tmp_path):
    (tmp_path / "e.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no sentences"):
        load_unlabeled_pairs(tmp_path / "e.txt")


def test_nli_csv_with_quoted_commas(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('sent0,sent1,hard_neg\n"A man, smiling.",A man smiles.,Nobody smiles.\n')
    [example] = load_nli_triplets(path)
    assert (example.query, example.positive, example.negative_texts) == ("A man, smiling.", "A man smiles.",
                                                                    ["Nobody smiles."])


def test_nli_csv_errors_name_line_and_field(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1,hard_neg\na,b,c\nd,,f\n")
    with pytest.raises(DataError) as info:
        load_nli_triplets(bad)
    assert info.value.line == 3 and info.value.field == "sent1"
    header = tmp_path / "header.csv"
    header.write_text("premise,hypothesis\na,b\n")
    with pytest.raises(DataError, match="sent0"):
        load_nli_triplets(header)


def test_real_files(data_dir):
    nli = read_training_data(str(data_dir / "nli" / "snli_devtest_triplets.csv"))
    assert len(nli) == 6339 and all(len(e.negatives) == 1 for e in nli)
    wiki = read_training_data(str(data_dir / "unlabeled" / "wiki1m_for_simcse_head11914.txt"))
    assert len(wiki) == 11914 and all(e.query == e.positive for e in wiki)


def test_detect_format():
    assert detect_format("a/b.txt.gz") == "text"
    assert detect_format("x.CSV") == "nli-csv"
    assert detect_format("mined.jsonl") == "examples"
