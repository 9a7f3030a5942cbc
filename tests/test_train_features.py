"""What a trainer's users expect: dev evaluation with best-checkpoint selection, experiment tracking, the model card
with densekit's settings, and ``--push-to-hub`` (against a local stand-in for the Hub's HTTP API)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from densekit.training.config import TrainConfig
from densekit.training.train import train
from tests.helpers import scifact_subset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mined_scifact(scifact_dir, tmp_path_factory):
    """40 real SciFact train queries over 200 documents, BM25 negatives, written as densekit mine does."""
    from densekit.cli import main

    root = tmp_path_factory.mktemp("features")
    beir = scifact_subset(scifact_dir, root / "beir", n_queries=40, n_docs=200, splits=("train",))
    mined = root / "mined.jsonl"
    assert main(["mine", "--data", str(beir), "--retriever", "bm25", "--num-negatives", "2", "--window", "1", "20",
                 "--cache-dir", "none", "--output", str(mined)]) == 0
    return beir, mined


def test_dev_queries_pick_the_best_checkpoint(mined_scifact, tiny_model_dir, tmp_path):
    """Held-back training queries are scored during training; the written model is the best checkpoint by
    nDCG@10, and the held-back queries were not trained on."""
    beir, mined = mined_scifact
    out = tmp_path / "model"
    cfg = TrainConfig.from_options(model=tiny_model_dir, data=str(mined), output=str(out), beir=str(beir),
                                   dev_queries=8, max_steps=6, batch_size=8, learning_rate=1e-3, save_steps=2,
                                   logging_steps=1, keep_checkpoints=True)
    info = json.loads((train(cfg) / "densekit_train.json").read_text())
    dev = info["dev"]
    assert dev["metric"] == "eval_dev_cosine_ndcg@10" and 0.0 <= dev["best"] <= 1.0
    history = json.loads((out / "log_history.json").read_text())
    scores = {e["step"]: e["eval_dev_cosine_ndcg@10"] for e in history if "eval_dev_cosine_ndcg@10" in e}
    assert sorted(scores) == [2, 4, 6] and dev["best"] == max(scores.values())
    best_step = int(Path(dev["best_checkpoint"]).name.split("-")[1])
    assert scores[best_step] == dev["best"]
    # the model folder holds the best checkpoint's weights
    from safetensors.torch import load_file

    written = load_file(out / "model.safetensors")
    best = load_file(Path(dev["best_checkpoint"]) / "model.safetensors")
    assert all(torch.equal(written[k], best[k]) for k in written)
    # 40 judged queries: 8 held back, so the rows of 32 queries were trained on
    held_out_rows = sum(1 for line in mined.read_text().splitlines())
    assert info["train_examples"] < held_out_rows
    assert (out / "training_curves.png").stat().st_size > 1000


def test_report_to_tensorboard_writes_event_files_beside_the_model(mined_scifact, tiny_model_dir, tmp_path,
                                                                    monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    _, mined = mined_scifact
    out = tmp_path / "model"
    train(TrainConfig.from_options(model=tiny_model_dir, data=str(mined), output=str(out), max_steps=3,
                                   batch_size=8, logging_steps=1, report_to="tensorboard"))
    events = list((tmp_path / "model.tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_model_card_carries_the_mining_and_training_settings(mined_scifact, tiny_model_dir, tmp_path):
    _, mined = mined_scifact
    out = train(TrainConfig.from_options(model=tiny_model_dir, data=str(mined), output=str(tmp_path / "m"),
                                         max_steps=2, batch_size=8, loss_option={"scale": 25}))
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "densekit" in card
    assert "retrievers:\n- bm25" in card and "window:\n- 1\n- 20" in card  # from mined.jsonl.mining.json
    assert "loss_options:\n  scale: 25" in card
    mining = json.loads(Path(f"{mined}.mining.json").read_text())
    assert json.loads((out / "densekit_train.json").read_text())["mining"] == mining


class FakeHub(BaseHTTPRequestHandler):
    """The calls ``huggingface_hub`` makes to create a repo and upload a folder of small files: create, the model
    card's metadata check, preupload (answered "regular": no LFS) and commit (NDJSON, files inline in base64),
    written to ``root``."""

    root: Path

    def _reply(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path == "/api/repos/create":
            request = json.loads(body)
            self.server.authorization = self.headers.get("authorization")
            return self._reply({"url": f"{base}/{request['organization']}/{request['name']}"})
        if self.path == "/api/validate-yaml":  # the model card's metadata block must be valid YAML
            import yaml

            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---")[1] if content.startswith("---") else "")
            except yaml.YAMLError as exc:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(json.dumps({"errors": [{"message": str(exc)}]}).encode())
                return None
            self.server.card_checked = True
            return self._reply({"warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})
        if "/commit/" in self.path:
            repo = self.path.split("/api/models/")[1].split("/commit/")[0]
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    target = self.root / repo / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
            return self._reply({"commitUrl": f"{base}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40})
        self.send_response(404)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_push_to_hub_uploads_the_model_folder(mined_scifact, tiny_model_dir, tmp_path):
    """``densekit train --push-to-hub`` runs huggingface_hub's real upload against HF_ENDPOINT (here a local
    stand-in): the repo receives the written model folder, which loads as a SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    _, mined = mined_scifact
    handler = type("Hub", (FakeHub,), {"root": tmp_path / "hub"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_OFFLINE": "0",
               "PYTHONPATH": str(REPO)}
        out = tmp_path / "model"
        proc = subprocess.run([sys.executable, "-m", "densekit.cli", "train", "--model", tiny_model_dir, "--data",
                               str(mined), "--output", str(out), "--max-steps", "2", "--batch-size", "8",
                               "--push-to-hub", "--hub-model-id", "densekit-test/tiny", "--hub-token", "hf_secret"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.shutdown()
    pushed = tmp_path / "hub" / "densekit-test" / "tiny"
    assert server.authorization == "Bearer hf_secret" and server.card_checked
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in pushed.iterdir())
    assert (pushed / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    local, remote = SentenceTransformer(str(out)), SentenceTransformer(str(pushed))
    assert torch.allclose(local.encode(["hello"], convert_to_tensor=True),
                          remote.encode(["hello"], convert_to_tensor=True))
