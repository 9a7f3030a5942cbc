"""``--backend auto``: measured once per machine and model shape, cached, exact engines only."""

import json

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
