"""False-negative denoising: filters, a planted duplicate of the positive, score caching, offline teachers."""

from __future__ import annotations

import numpy as np
import pytest

from densekit.data.beir import BeirDataset, doc_text, load_beir
from densekit.errors import ConfigError
from densekit.mining.denoise import DenoiseConfig, drop_reasons, soft_weights
from densekit.mining.miner import MineConfig
from densekit.mining.registry import TEACHERS
from densekit.mining.teachers import score_pairs_cached
from tests.helpers import mine_json

BGE_PREFIX = "Represent this sentence for searching relevant passages: "


def drop_reasons_examples():
    return drop_reasons(np.array([0.99, 0.9, 0.5, 0.85]), 0.92, absolute_margin=None, perc_pos=0.95,
                        max_score=0.95)


def test_filters_follow_their_definitions():
    assert drop_reasons_examples() == ["max_score", "perc_pos", None, None]  # 0.9 > 0.95 * 0.92 = 0.874
    assert drop_reasons(np.array([0.85, 0.75]), 0.9, absolute_margin=0.1) == ["absolute_margin", None]
    # a teacher that scores the positive <= 0 cannot define a relative threshold
    assert drop_reasons(np.array([0.3]), -0.2, perc_pos=0.95) == [None]
    w = soft_weights(np.array([0.1, 0.8, 0.9, 1.0, 1.2]), 1.0, soft_start=0.8)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.5, 0.0, 0.0])


def test_filters_without_teacher_are_rejected():
    with pytest.raises(ConfigError, match="need a teacher"):
        DenoiseConfig(perc_pos=0.95).validate()
    with pytest.raises(ConfigError, match="perc_pos"):
        DenoiseConfig(teacher="bi-encoder", perc_pos=1.5).validate()


@pytest.fixture(scope="module")
def planted(scifact_dir) -> tuple[BeirDataset, str, str]:
    """Four SciFact train queries over 80 documents, plus a copy of query 1's positive under a new id.

    The copy differs only in spacing, as duplicates do in scraped corpora: the exact-text check of
    the miner does not catch it, a teacher scores it like the positive.
    """
    full = load_beir(scifact_dir, "train")
    qids = sorted(full.qrels)[1:5]
    positives = sorted({d for q in qids for d in full.qrels[q]})
    others = [d for d in full.corpus if d not in positives][:80]
    corpus = {d: full.corpus[d] for d in positives + others}
    qid = qids[0]
    pid = sorted(full.qrels[qid])[0]
    corpus["planted-dup"] = {"title": corpus[pid]["title"], "text": corpus[pid]["text"].replace(". ", ".  ")}
    assert doc_text(corpus["planted-dup"]) != doc_text(corpus[pid])
    dataset = BeirDataset(full.path, corpus, {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids},
                          "train")
    return dataset, qid, pid


def negatives_of(records: list[dict], qid: str) -> list[str]:
    return [n["doc_id"] for r in records if r["query_id"] == qid for n in r["negatives"]]


@pytest.mark.parametrize("teacher, options", [
    ("cross-encoder", {"max_seq_length": 128, "backend": "onnx"}),
    ("bi-encoder", {"model": "all-MiniLM-L6-v2", "max_seq_length": 128}),
    ("bi-encoder", {"model": "BAAI/bge-small-en", "max_seq_length": 128, "query_prefix": BGE_PREFIX}),
])
def test_denoising_removes_planted_duplicate(planted, teacher, options, tmp_path, minilm_path):
    dataset, qid, _ = planted
    # the near-duplicate filter would catch the planted copy before the teacher sees it: this tests the teacher
    base = dict(retrievers=["bm25"], num_negatives=3, window=(1, 10), cache_dir=str(tmp_path),
                near_duplicate_threshold=0.0)
    plain = mine_json(dataset, MineConfig(**base))
    assert "planted-dup" in negatives_of(plain, qid)  # the miner alone is fooled

    denoise = DenoiseConfig(teacher=teacher, teacher_options=options, perc_pos=0.95, soft_weights=True)
    records = mine_json(dataset, MineConfig(**base, denoise=denoise))
    assert "planted-dup" not in negatives_of(records, qid)
    record = next(r for r in records if r["query_id"] == qid)
    dropped = {d["doc_id"]: d for d in record["dropped"]}
    assert dropped["planted-dup"]["reason"] == "perc_pos"
    assert dropped["planted-dup"]["teacher_score"] == pytest.approx(record["positive_teacher_score"], abs=1e-3)
    for r in records:
        for neg in r["negatives"]:
            assert neg["teacher_score"] <= 0.95 * r["positive_teacher_score"] + 1e-6
            assert 0.0 <= neg["weight"] <= 1.0
        assert 1 <= len(r["negatives"]) <= 3
    # oversampling refills what was dropped for the query with the planted copy
    assert len(record["negatives"]) == 3

    # teacher scores are cached: a rerun never calls the teacher again
    cls = TEACHERS.get(teacher)
    original = cls.score
    cls.score = lambda self, pairs: (_ for _ in ()).throw(AssertionError(f"rescored {len(pairs)} pairs"))
    try:
        assert mine_json(dataset, MineConfig(**base, denoise=denoise)) == records
    finally:
        cls.score = original


def test_untrusted_teacher_neither_drops_nor_down_weights(planted, tmp_path, minilm_path):
    """Below min_positive_score the teacher does not believe the judged positive: its relative verdicts are void."""
    dataset, qid, _ = planted
    # the near-duplicate filter would catch the planted copy before the teacher sees it: this tests the teacher
    base = dict(retrievers=["bm25"], num_negatives=3, window=(1, 10), cache_dir=str(tmp_path),
                near_duplicate_threshold=0.0)
    denoise = DenoiseConfig(teacher="bi-encoder", teacher_options={"model": "all-MiniLM-L6-v2", "max_seq_length": 128},
                            perc_pos=0.95, soft_weights=True, min_positive_score=2.0)  # cosine never reaches 2
    records = mine_json(dataset, MineConfig(**base, denoise=denoise))
    assert all(r["teacher_disagrees"] and "dropped" not in r for r in records)
    assert all(n["weight"] == 1.0 for r in records for n in r["negatives"])
    assert "planted-dup" in negatives_of(records, qid)


def test_score_cache_scores_duplicates_once(tmp_path):
    class CountingTeacher:
        name = "counting"
        pairs_per_call = 256
        calls: list[int] = []

        def fingerprint(self) -> str:
            return "counting-v1"

        def score(self, pairs):
            self.calls.append(len(pairs))
            return np.array([len(q) + len(d) for q, d in pairs], dtype=np.float32)

    teacher = CountingTeacher()
    pairs = [("q", "doc a"), ("q", "doc bb"), ("q", "doc a")]
    np.testing.assert_allclose(score_pairs_cached(teacher, pairs, tmp_path), [6, 7, 6])
    assert teacher.calls == [2]
    np.testing.assert_allclose(score_pairs_cached(teacher, pairs + [("r", "x")], tmp_path), [6, 7, 6, 2])
    assert teacher.calls == [2, 1]


def test_cross_encoder_ranks_relevant_above_irrelevant():
    teacher = TEACHERS.get("cross-encoder")(max_seq_length=128)  # hub name, offline fallback to the packaged ONNX
    scores = teacher.score([("what causes influenza", "Influenza is caused by influenza viruses."),
                            ("what causes influenza", "The Eiffel Tower is in Paris.")])
    assert scores.shape == (2,) and 0.0 <= scores.min() and scores.max() <= 1.0
    assert scores[0] > 0.5 > scores[1]


@pytest.mark.integration
def test_mpnet_teacher_resolves_offline(tmp_path):
    from densekit.mining.teachers import resolve_teacher_model

    folder = resolve_teacher_model("sentence-transformers/all-mpnet-base-v2")
    assert folder != "sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2 part packages not installed"
    teacher = TEACHERS.get("bi-encoder")(max_seq_length=64)
    scores = teacher.score([("a cat sits on the mat", "a kitten is sitting on a rug"),
                            ("a cat sits on the mat", "stock markets fell sharply today")])
    assert scores[0] > scores[1] + 0.3


def test_onnx_bi_encoder_teacher_ranks_scifact_positives_first(scifact_dir, tmp_path):
    """The packaged int8 bge-small-en (onnxruntime, CLS pooling): each query's judged positive outscores the
    positives of the other queries, and the query prefix is part of the score cache's fingerprint."""
    data = load_beir(scifact_dir, "train")
    qids = sorted(data.qrels)[:6]
    docs = [doc_text(data.corpus[sorted(data.qrels[q])[0]]) for q in qids]
    teacher = TEACHERS.get("bi-encoder")(model="BAAI/bge-small-en", max_seq_length=256, query_prefix=BGE_PREFIX)
    scores = teacher.score([(data.queries[q], d) for q in qids for d in docs]).reshape(len(qids), len(docs))
    assert (scores.argmax(axis=1) == np.arange(len(qids))).sum() >= 5
    assert np.all(np.abs(scores) <= 1.0 + 1e-5)  # cosine of normalised embeddings
    plain = TEACHERS.get("bi-encoder")(model="BAAI/bge-small-en", max_seq_length=256)
    assert plain.fingerprint() != teacher.fingerprint()
    with pytest.raises(ConfigError, match="no ONNX export"):
        TEACHERS.get("bi-encoder")(model=str(tmp_path), backend="onnx")
    with pytest.raises(ConfigError, match="pooling"):
        TEACHERS.get("bi-encoder")(model="BAAI/bge-small-en", pooling="max").score([("a", "b")])


def test_short_queries_are_refilled_from_their_window(planted, tmp_path, minilm_path):
    """oversample=1 leaves no spare candidate: dropping the planted duplicate makes the query short, and the
    refill tops it up with the next candidates of its window, rescored and filtered like the first ones."""
    dataset, qid, _ = planted
    teacher = {"model": "all-MiniLM-L6-v2", "max_seq_length": 128}
    # the near-duplicate filter would catch the planted copy before the teacher sees it: this tests the teacher
    base = dict(retrievers=["bm25"], num_negatives=3, window=(1, 10), cache_dir=str(tmp_path),
                near_duplicate_threshold=0.0)

    def denoised(refill: bool) -> list[dict]:
        config = DenoiseConfig(teacher="bi-encoder", teacher_options=teacher, perc_pos=0.95, oversample=1,
                               refill=refill)
        return mine_json(dataset, MineConfig(**base, denoise=config))

    short = next(r for r in denoised(False) if r["query_id"] == qid)
    assert len(short["negatives"]) < 3 and "refilled" not in short
    record = next(r for r in denoised(True) if r["query_id"] == qid)
    ids = [n["doc_id"] for n in record["negatives"]]
    assert len(ids) == 3 and len(set(ids)) == 3 and "planted-dup" not in ids
    assert record["refilled"] >= 1
    assert all(1 <= n["rank"] <= 10 and "teacher_score" in n for n in record["negatives"])
    assert {d["doc_id"] for d in record["dropped"]}.isdisjoint(ids)
