"""STS loading (raw files, unscored pairs skipped) and the Spearman evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from densekit.errors import ConfigError, DataError
from densekit.evaluation.sts import STS_TASKS, evaluate_sts, load_sts, spearman_x100

# the standard scored-pair counts (SentEval/SimCSE/MTEB test sets)
EXPECTED_TEST_PAIRS = {"STSBenchmark": 1379, "SICK-R": 4927, "STS12": 3108, "STS13": 1500, "STS14": 3750,
                       "STS15": 3000, "STS16": 1186}


@pytest.mark.parametrize("task", STS_TASKS)
def test_real_test_sets_have_the_standard_pair_counts(task, data_dir):
    pairs = load_sts(task, data_dir)
    assert len(pairs) == EXPECTED_TEST_PAIRS[task]
    for s1, s2, score in pairs:
        assert s1.strip() and s2.strip() and "\r" not in s1 + s2 and "\t" not in s1 + s2
        assert 0.0 <= score <= 5.0


def test_stsb_and_sick_other_splits(data_dir):
    assert len(load_sts("STSBenchmark", data_dir, "train")) == 5749
    assert len(load_sts("SICK-R", data_dir, "dev")) == 500
    with pytest.raises(ConfigError, match="only a test split"):
        load_sts("STS12", data_dir, "train")


def _semeval_folder(root, gold_lines, input_lines):
    year = root / "sts" / "semeval_raw" / "STS15"
    year.mkdir(parents=True)
    (year / "STS.input.demo.txt").write_text("\n".join(input_lines) + "\n", encoding="utf-8")
    (year / "STS.gs.demo.txt").write_text("\n".join(gold_lines) + "\n", encoding="utf-8")
    return root


def test_blank_gold_lines_are_skipped(tmp_path):
    root = _semeval_folder(tmp_path, ["4.0", "", "1.5"], ["a b\tc d", "e f\tg h", "i j\tk l"])
    assert load_sts("STS15", root) == [("a b", "c d", 4.0), ("i j", "k l", 1.5)]


def test_bad_gold_score_names_file_and_line(tmp_path):
    root = _semeval_folder(tmp_path, ["4.0", "high"], ["a\tb", "c\td"])
    with pytest.raises(DataError, match=r"STS\.gs\.demo\.txt:2.*'score'"):
        load_sts("STS15", root)


def test_mismatched_line_counts_are_an_error(tmp_path):
    root = _semeval_folder(tmp_path, ["4.0"], ["a\tb", "c\td"])
    with pytest.raises(DataError, match="2 sentence pairs but 1 gold lines"):
        load_sts("STS15", root)


def test_crlf_sick_file(tmp_path):
    sick = tmp_path / "sts" / "sick2014"
    sick.mkdir(parents=True)
    (sick / "SICK_test_annotated.txt").write_bytes(
        b"pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n"
        b"1\tA man runs\tA person runs\t4.5\tENTAILMENT\r\n2\tA cat\tA car\t1.2\tNEUTRAL\r\n")
    assert load_sts("SICK-R", tmp_path) == [("A man runs", "A person runs", 4.5), ("A cat", "A car", 1.2)]


def test_unknown_task_is_a_config_error(data_dir):
    with pytest.raises(ConfigError, match="unknown STS task 'STS99'.*STSBenchmark"):
        load_sts("STS99", data_dir)


def test_spearman_is_rank_based():
    gold = np.array([0.0, 1.0, 2.0, 3.0])
    assert spearman_x100(np.array([0.1, 0.2, 0.9, 0.95]), gold) == pytest.approx(100.0)
    assert spearman_x100(np.array([0.9, 0.8, 0.2, 0.1]), gold) == pytest.approx(-100.0)


def test_evaluate_sts_with_tiny_model(tiny_model_dir, tmp_path):
    root = _semeval_folder(tmp_path, ["5.0", "0.0", "2.5", ""],
                           ["a dog runs\ta dog runs", "red apple\tquantum physics", "a cat\ta kitten",
                            "x\ty"])
    from densekit.models import load_model

    model = load_model(tiny_model_dir)
    result = evaluate_sts(model, ["STS15"], data_dir=root)
    assert set(result) == {"STS15", "avg"}
    assert result["avg"] == result["STS15"]
    # the same number computed by hand: cosine of separately encoded sentences, Spearman against gold
    from scipy.stats import spearmanr

    left = model.encode(["a dog runs", "red apple", "a cat"], normalize_embeddings=True)
    right = model.encode(["a dog runs", "quantum physics", "a kitten"], normalize_embeddings=True)
    expected = spearmanr((left * right).sum(axis=1), [5.0, 0.0, 2.5]).statistic * 100
    assert result["STS15"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.integration
def test_minilm_stsb_matches_published_mteb_score(minilm_path, data_dir):
    # all-MiniLM-L6-v2's published MTEB STSBenchmark (test) cosine Spearman is 82.03
    result = evaluate_sts(minilm_path, ["STSBenchmark"], data_dir=data_dir)
    assert result["STSBenchmark"] == pytest.approx(82.03, abs=0.01)
