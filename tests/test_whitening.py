"""Post-hoc whitening: the fit, the module in the model folder, the CLI."""

import json

import numpy as np
import pytest

from densekit.errors import ConfigError, DataError
from densekit.training.whitening import fit_whitening, read_sentences, whiten_model

SENTENCES = [f"sentence {i} talks about subject {i % 9} and detail {i % 4}" for i in range(80)]


def test_fit_whitening_gives_identity_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    mean, w = fit_whitening(x)
    y = (x - mean) @ w
    assert np.allclose(y.mean(0), 0, atol=1e-4)
    assert np.allclose(np.cov(y, rowvar=False), np.eye(6), atol=1e-3)


def test_dimension_reduction_keeps_top_variance_directions():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)) * np.array([10.0, 5.0, 1.0, 0.1, 0.01])
    mean, w = fit_whitening(x, dim=2)
    assert w.shape == (5, 2)
    assert np.abs(w[3:]).max() < 1e-2 * np.abs(w[:2]).max()  # the two big-variance axes are kept


def test_fit_errors():
    with pytest.raises(ConfigError):
        fit_whitening(np.zeros((10, 3)), dim=4)
    with pytest.raises(DataError):
        fit_whitening(np.zeros((1, 3)))


def test_whitened_model_folder_loads_with_plain_sentence_transformer(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from densekit.training.whitening import whitening_input

    out = whiten_model(tiny_model_dir, SENTENCES, tmp_path / "white", dim=8)
    base = SentenceTransformer(tiny_model_dir, device="cpu")
    mean, w = fit_whitening(whitening_input(base, SENTENCES, show_progress=False), dim=8)
    whitened = SentenceTransformer(str(out), device="cpu")
    got = whitened.encode(SENTENCES[:5])
    want = (base.encode(SENTENCES[:5]) - mean) @ w
    assert got.shape == (5, 8)
    assert np.allclose(got, want, atol=1e-4)
    assert json.loads((out / "densekit_whitening.json").read_text())["dim"] == 8
    emb = whitened.encode(SENTENCES)
    assert np.allclose(np.cov(emb, rowvar=False), np.eye(8), atol=0.05)  # whitened on its own fit data


def test_normalized_model_stays_normalized(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = whiten_model(minilm_path, SENTENCES[:40], tmp_path / "white", dim=16)
    model = SentenceTransformer(str(out), device="cpu")
    assert type(model[-1]).__name__ == "Normalize" and type(model[-2]).__name__ == "Dense"
    assert np.allclose(np.linalg.norm(model.encode(SENTENCES[:3]), axis=1), 1.0, atol=1e-5)


def test_whiten_cli_from_beir_corpus(tiny_model_dir, tmp_path):
    from densekit.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": f"t{i}", "text": s}) + "\n"
                              for i, s in enumerate(SENTENCES)))
    assert read_sentences(corpus, 3) == [f"t{i} {s}" for i, s in enumerate(SENTENCES[:3])]
    code = main(["whiten", "--model", tiny_model_dir, "--data", str(corpus), "--output", str(tmp_path / "m"),
                 "--dim", "4", "--max-sentences", "60"])
    assert code == 0 and (tmp_path / "m" / "modules.json").exists()


def test_read_sentences_errors(tmp_path):
    (tmp_path / "one.txt").write_text("only one\n\n")
    with pytest.raises(DataError, match="at least 2"):
        read_sentences(tmp_path / "one.txt")
    (tmp_path / "bad.jsonl").write_text('{"_id": "1", "text": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        read_sentences(tmp_path / "bad.jsonl")
