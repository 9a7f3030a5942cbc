"""``--backend auto``: measured once per machine and model shape, cached, exact engines only."""

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from densekit import calibration
from densekit.encoders import EncoderOptions, load_encoder
from densekit.models import encode, load_model
from densekit.onnx_encoder import OnnxEncoder

SENTENCES = ["Folate deficiency raises homocysteine.", "ALDH1 expression predicts poorer prognosis.", "x"]


def calibration_files(root):
    return sorted((root / "calibration").rglob("*.json"))


def test_auto_measures_once_then_reuses_the_decision(tiny_model_dir, tmp_path, monkeypatch):
    encoder = load_encoder(tiny_model_dir, backend="auto", cache_dir=str(tmp_path))
    [path] = calibration_files(tmp_path)
    result = json.loads(path.read_text())
    assert set(result["seconds"]) == {"torch", "onnx"} and all(s > 0 for s in result["seconds"].values())
    assert result["min_cosine_to_torch"]["onnx"] > calibration.MIN_COSINE
    assert result["choice"] == min(result["seconds"], key=result["seconds"].get)
    assert result["machine"] == calibration.machine_key() and result["model"]["num_hidden_layers"] == 2
    assert isinstance(encoder, OnnxEncoder if result["choice"] == "onnx" else SentenceTransformer)
    # whatever it picked, the embeddings are the torch model's
    reference = encode(load_model(tiny_model_dir), SENTENCES, show_progress=False)
    assert (encode(encoder, SENTENCES, show_progress=False) * reference).sum(1).min() > calibration.MIN_COSINE

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("calibrated twice")

    monkeypatch.setattr(calibration, "calibrate", no_second_measurement)
    load_encoder(tiny_model_dir, backend="auto", cache_dir=str(tmp_path))  # cache hit
    load_encoder(tiny_model_dir, max_seq_length=64, backend="torch", cache_dir=str(tmp_path))  # explicit: no measuring
    with pytest.raises(AssertionError, match="calibrated twice"):  # another shape is another decision
        load_encoder(tiny_model_dir, max_seq_length=17, backend="auto", cache_dir=str(tmp_path))


@pytest.mark.parametrize("choice, kind", [("onnx", OnnxEncoder), ("torch", SentenceTransformer)])
def test_the_cached_decision_is_what_loads(tiny_model_dir, tmp_path, choice, kind):
    model = load_model(tiny_model_dir)
    path = calibration.calibration_file(tmp_path, calibration.machine_key(), calibration.model_key(model))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"choice": choice}))
    assert isinstance(EncoderOptions(cache_dir=str(tmp_path)).load(tiny_model_dir), kind)


def test_a_faster_engine_that_is_not_exact_is_not_chosen(tiny_model_dir, tmp_path, monkeypatch):
    def fast_but_wrong(self, texts, batch_size=64, **_):
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(len(texts), self.get_sentence_embedding_dimension())).astype(np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    monkeypatch.setattr(OnnxEncoder, "encode", fast_but_wrong)
    result = calibration.calibrate(load_model(tiny_model_dir), tmp_path)
    assert result["seconds"]["onnx"] < result["seconds"]["torch"]
    assert result["min_cosine_to_torch"]["onnx"] < calibration.MIN_COSINE and result["choice"] == "torch"


def test_the_machine_is_part_of_the_key(tiny_model_dir, tmp_path):
    model_shape = calibration.model_key(load_model(tiny_model_dir))
    here = calibration.machine_key()
    other_cpu = {**here, "flags": [f for f in here["flags"] if not f.startswith("amx")] + ["other"]}
    fewer_threads = {**here, "threads": here["threads"] + 1}
    paths = {calibration.calibration_file(tmp_path, m, model_shape) for m in (here, other_cpu, fewer_threads)}
    assert len(paths) == 3


def test_bf16_is_an_explicit_choice_of_torch():
    assert EncoderOptions(bf16=True).backend == "torch"


@pytest.fixture
def onnx_decided(monkeypatch):
    """``auto`` decides onnx for every model shape (as a machine where onnxruntime is faster would), untimed."""

    def onnx_is_faster(model, root, **_):
        return {"choice": "onnx", "seconds": {"torch": 2.0, "onnx": 1.0},
                "docs_per_second": {"torch": 16.0, "onnx": 32.0}, "min_cosine_to_torch": {"onnx": 1.0}}

    monkeypatch.setattr(calibration, "calibrate", onnx_is_faster)


def test_every_command_under_auto_gives_the_torch_embeddings(scifact_dir, tiny_model_dir, tmp_path, onnx_decided):
    """index, search/serve (the index's Searcher), eval and whiten: ``auto`` (here onnx) == ``torch``."""
    import faiss

    from densekit.cli import main
    from densekit.retrieval.searcher import Searcher
    from tests.helpers import scifact_subset

    data = scifact_subset(scifact_dir, tmp_path / "beir", n_queries=10, n_docs=60, splits=("test",))
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES * 4 + [f"sentence number {i} about cells" for i in range(40)]) + "\n")
    out = {}
    for backend in ("torch", "auto"):
        cache = ["--backend", backend, "--cache-dir", str(tmp_path / f"cache-{backend}")]
        assert main(["index", "--model", tiny_model_dir, "--data", str(data), "--output",
                     str(tmp_path / f"index-{backend}"), *cache]) == 0
        assert main(["eval", "--model", tiny_model_dir, "--data", str(data), "--split", "test", "--output",
                     str(tmp_path / f"eval-{backend}"), *cache]) == 0
        assert main(["whiten", "--model", tiny_model_dir, "--data", str(sentences), "--output",
                     str(tmp_path / f"white-{backend}"), *cache]) == 0
        index = faiss.read_index(str(tmp_path / f"index-{backend}" / "index.faiss"))
        searcher = Searcher.from_index(tmp_path / f"index-{backend}", encoder=EncoderOptions(
            backend=backend, cache_dir=str(tmp_path / f"cache-{backend}")))
        out[backend] = {
            "vectors": index.reconstruct_n(0, index.ntotal),
            "hits": [h.doc_id for h in searcher.search(SENTENCES[0], 5)],
            "ndcg": json.loads((tmp_path / f"eval-{backend}" / "metrics.json").read_text())["ndcg_at_10"],
            "white": encode(load_model(str(tmp_path / f"white-{backend}")), SENTENCES, show_progress=False),
            "encoder": type(searcher.encoder).__name__,
        }
    assert [p.name for p in (tmp_path / "cache-auto" / "onnx").iterdir()]  # auto did run onnx
    assert out["auto"]["encoder"] == "OnnxEncoder" and out["torch"]["encoder"] == "SentenceTransformer"
    assert (out["auto"]["vectors"] * out["torch"]["vectors"]).sum(1).min() > calibration.MIN_COSINE
    assert out["auto"]["hits"] == out["torch"]["hits"]
    assert out["auto"]["ndcg"] == pytest.approx(out["torch"]["ndcg"], abs=1e-3)
    white_cos = (out["auto"]["white"] * out["torch"]["white"]).sum(1) / (
        np.linalg.norm(out["auto"]["white"], axis=1) * np.linalg.norm(out["torch"]["white"], axis=1))
    assert white_cos.min() > 0.999


def test_a_model_onnx_cannot_run_falls_back_to_torch_with_a_message(tiny_model_dir, tmp_path, caplog):
    """A static-embedding model (no transformer graph to export): auto measures torch alone and says why."""
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(next(Path(tiny_model_dir).rglob("tokenizer.json"))))
    static = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=16)], device="cpu")
    static.save(str(tmp_path / "static"))
    with caplog.at_level("INFO", logger="densekit.calibration"):
        encoder = load_encoder(str(tmp_path / "static"), backend="auto", cache_dir=str(tmp_path / "cache"))
    assert isinstance(encoder, SentenceTransformer)
    assert "onnx not measured" in caplog.text and "Transformer" in caplog.text
    [path] = calibration_files(tmp_path / "cache")
    assert json.loads(path.read_text())["choice"] == "torch"


def test_a_failed_export_is_a_clear_error_and_auto_keeps_torch(tiny_model_dir, tmp_path, monkeypatch, caplog):
    import torch

    from densekit.errors import ConfigError

    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::some_op' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(ConfigError, match="cannot be exported to ONNX.*aten::some_op.*--backend torch"):
        load_encoder(tiny_model_dir, backend="onnx", cache_dir=str(tmp_path / "explicit"))
    with caplog.at_level("INFO", logger="densekit.calibration"):
        encoder = load_encoder(tiny_model_dir, backend="auto", cache_dir=str(tmp_path / "auto"))
    assert isinstance(encoder, SentenceTransformer) and "cannot be exported to ONNX" in caplog.text
    assert not list((tmp_path / "auto" / "onnx").rglob("*.onnx"))
