"""The dynamic training modes: STAR's loss and masking, ANCE's asynchronous refresh, ADORE's fixed index."""

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from densekit.data.records import Negative, TrainingRecord
from densekit.errors import ConfigError
from densekit.training.adore import lambda_weights
from densekit.training.config import TrainConfig
from densekit.training.losses.base import LossContext
from densekit.training.losses.star import StarLoss
from densekit.training.rows import DynamicNegativesCollator, NegativeStore, TrainingRows
from densekit.training.train import train
from tests.helpers import scifact_subset


@pytest.fixture(scope="module")
def small_scifact(scifact_dir, tmp_path_factory):
    """40 real SciFact train queries over 200 documents, with BM25 negatives mined by densekit."""
    from densekit.data.beir import load_beir
    from densekit.io import atomic_write_jsonl
    from densekit.mining.miner import MineConfig, mine

    root = tmp_path_factory.mktemp("dyn")
    beir = scifact_subset(scifact_dir, root / "beir", n_queries=40, n_docs=200, splits=("train",))
    records = mine(load_beir(beir, "train"), MineConfig(retrievers=["bm25"], num_negatives=2, window=(1, 20)))
    mined = root / "mined.jsonl"
    atomic_write_jsonl(mined, (r.to_json() for r in records))
    return beir, mined


def rows(query_ids, positive_ids, relevant, negative_ids=None):
    negative_ids = negative_ids or [[] for _ in query_ids]
    records = [TrainingRecord(f"q{i}", f"p{i}", [Negative(f"text of {d}", doc_id=d) for d in negs], query_id=q,
                              positive_id=p)
               for i, (q, p, negs) in enumerate(zip(query_ids, positive_ids, negative_ids, strict=True))]
    return TrainingRows(records, relevant)


def config(**values) -> TrainConfig:
    return TrainConfig.from_options(save_steps=100, **values)


def test_star_loss_known_values():
    loss = StarLoss(model=torch.nn.Identity(), scale=50.0)
    anchors = torch.eye(4, 8)
    # every negative orthogonal: each pair costs softplus(-50) ~ 0
    assert loss.compute_loss_from_embeddings([anchors, anchors.clone(), torch.eye(8)[4:]]).item() < 1e-6
    # a negative scoring exactly as high as the positive (but not a copy of it) costs log 2
    e = torch.eye(3)
    tie = StarLoss(model=torch.nn.Identity(), scale=5.0)
    value = tie.compute_loss_from_embeddings([e[:1], (e[:1] + e[1:2]), (e[:1] + e[2:3])])
    assert value.item() == pytest.approx(math.log(2), rel=1e-5)
    # a copy of the positive among the negatives is masked, not pushed away
    assert tie.compute_loss_from_embeddings([e[:1], e[1:2] + e[:1], e[1:2] + e[:1]]).item() == 0.0


def test_star_masks_in_batch_documents_relevant_to_the_query():
    anchors = torch.eye(2, 4)
    positives = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.8, 0.6, 0, 0])])
    # query a's judged documents are both positives in the batch: pairing it against p1 would punish a hit
    r = rows(["a", "b"], ["d0", "d1"], {"a": {"d0", "d1"}, "b": {"d1"}})
    masked = StarLoss(model=torch.nn.Identity(), scale=20.0, context=LossContext(rows=r))
    plain = StarLoss(model=torch.nn.Identity(), scale=20.0)
    labels = torch.tensor([0, 1])
    with_mask = masked.compute_loss_from_embeddings([anchors, positives], labels).item()
    without = plain.compute_loss_from_embeddings([anchors, positives], labels).item()
    # only (b, p0) remains: s(b, p0) = 0 vs s(b, p1) = 0.6 -> softplus(20 * -0.6)
    assert with_mask == pytest.approx(math.log1p(math.exp(-12.0)), rel=1e-4)
    assert without > with_mask


def test_lambda_weights_delta_ndcg():
    w = lambda_weights(torch.tensor([1]), torch.tensor([2, 20]), ideal_dcg=1.0, cutoff=10)
    assert w[0, 0].item() == pytest.approx(1 - 1 / math.log2(3), rel=1e-5)
    assert w[0, 1].item() == pytest.approx(1.0)  # the negative is outside the cutoff: full gain at stake
    both_out = lambda_weights(torch.tensor([15]), torch.tensor([20]), ideal_dcg=1.0, cutoff=10)
    assert both_out.item() == 0.0


def test_collator_takes_negatives_from_the_store_after_a_swap():
    r = rows(["a", "b"], ["d0", "d1"], {"a": {"d0"}, "b": {"d1"}}, [["n1"], ["n2"]])
    store = NegativeStore({"a": ["n1"], "b": ["n2"]})
    texts = {"n1": "old one", "n2": "old two", "n3": "new three"}
    collator = DynamicNegativesCollator(preprocess_fn=None, store=store, rows=r, num_negatives=2, texts=texts)
    batch = [{"anchor": "q0", "positive": "p0", "label": 0}, {"anchor": "q1", "positive": "p1", "label": 1}]
    assert [row["negative_1"] for row in collator.fill(batch)] == ["old one", "old two"]
    store.swap({"a": ["n3"], "b": ["n3", "n1"]}, version=1)
    out = collator.fill(batch)
    assert [row["negative_1"] for row in out] == ["new three", "new three"]
    assert out[1]["negative_2"] == "old one" and store.version == 1


class WaitForFile(TrainerCallback):
    """Hold training at one step until a file appears (so a slow worker surely finishes in a short test); give up
    as soon as the worker's log shows it failed."""

    def __init__(self, path: Path, step: int, timeout: float = 600.0) -> None:
        self.path, self.step, self.timeout = path, step, timeout

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != self.step:
            return
        log = self.path.parent / "worker-0000.log"
        deadline = time.time() + self.timeout
        while not self.path.exists() and time.time() < deadline:
            if log.exists() and ("Traceback" in log.read_text() or "error:" in log.read_text()):
                raise AssertionError(f"the refresh worker failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)  # the worker exits right after writing its result


def test_ance_worker_picks_up_the_new_checkpoint(small_scifact, tiny_model_dir, tmp_path):
    """Every refresh re-encodes its slice of the corpus with the checkpoint it was launched from."""
    from densekit.data.beir import doc_text, load_beir
    from densekit.mining.refresh import refresh_slice
    from densekit.models import encode, load_model
    from densekit.vectors import EmbeddingStore

    beir, mined = small_scifact
    out = tmp_path / "ance"
    state = tmp_path / "ance.ance"
    cfg = config(model=tiny_model_dir, data=str(mined), output=str(out), mode="ance", beir=str(beir), max_steps=5,
                 batch_size=8, learning_rate=1e-3, refresh_steps=2, refresh_fraction=0.5, refresh_window=[1, 20],
                 keep_checkpoints=True)
    info = json.loads((train(cfg, callbacks=[WaitForFile(state / "negatives-0000.json", step=2)]) /
                       "densekit_train.json").read_text())
    events = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
    swaps = [e for e in events if e["event"] == "swap"]
    assert swaps[0]["launched_at_step"] == 2 and swaps[0]["refresh"] == 0 and swaps[0]["docs_encoded"] == 100
    assert swaps[0]["swap_seconds"] < 1.0 and swaps[0]["step"] == info["ance"]["swap_steps_by_rank"][0][0]
    assert info["ance"]["swaps"] == len(swaps) >= 1 and info["ance"]["negatives_version"] == len(swaps)
    dataset = load_beir(beir, "train")
    texts = [doc_text(d) for d in dataset.corpus.values()]
    stored = EmbeddingStore.open(state / "embeddings", count=len(texts)).read_all()  # the refresh worker's store
    # each finished refresh r holds its slice as encoded by the checkpoint it was launched from; refresh 0's
    # slice is never touched by refresh 1 (fraction 0.5: the two halves)
    for swap in swaps:
        result = json.loads((state / f"negatives-{swap['refresh']:04d}.json").read_text())
        assert result["checkpoint"].endswith(f"checkpoint-{swap['launched_at_step']}")
        assert len(result["negatives"]) == 40
        rows = refresh_slice(len(texts), 0.5, swap["refresh"])
        ckpt = encode(load_model(result["checkpoint"]), [texts[i] for i in rows], show_progress=False)
        assert np.allclose(stored[rows], ckpt, atol=1e-5)
    base = encode(load_model(tiny_model_dir), [texts[i] for i in refresh_slice(len(texts), 0.5, 0)],
                  show_progress=False)
    assert not np.allclose(stored[refresh_slice(len(texts), 0.5, 0)], base, atol=1e-4)
    # the swap really changed what the collator feeds: the negatives differ from the mined ones for some query
    mined_negs = {json.loads(line)["query_id"]: [n["doc_id"] for n in json.loads(line)["negatives"]]
                  for line in mined.read_text().splitlines()}
    first = json.loads((state / "negatives-0000.json").read_text())["negatives"]
    assert any(first[q] != mined_negs[q] for q in first)
    steps = [json.loads(line) for line in (state / "step_times.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]


class BreakCorpus(TrainerCallback):
    """Corrupt the corpus file after step 1: the trainer has it in memory, the refresh worker reads it again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.path.write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2"\n')
        if state.global_step == 2:
            time.sleep(3)


def test_failed_refresh_keeps_the_old_negatives_and_training_goes_on(small_scifact, tiny_model_dir, tmp_path):
    """The corpus file goes bad under the running job: the refresh fails, the old negatives stay, training ends."""
    import shutil

    beir, mined = small_scifact
    beir = Path(shutil.copytree(beir, tmp_path / "beir"))
    out = tmp_path / "ance"
    cfg = config(model=tiny_model_dir, data=str(mined), output=str(out), mode="ance", beir=str(beir), max_steps=4,
                 batch_size=8, refresh_steps=2)
    info = json.loads((train(cfg, callbacks=[BreakCorpus(beir / "corpus.jsonl")]) / "densekit_train.json").read_text())
    assert info["global_step"] == 4
    assert info["ance"] == {**info["ance"], "swaps": 0, "failures": 1, "negatives_version": 0}
    events = [json.loads(line) for line in (tmp_path / "ance.ance" / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "failed"]
    assert failed and failed[0]["reason"].startswith("worker exited with")
    assert "corpus.jsonl:2" in failed[0]["log_tail"]  # the worker's error names the file and line


def _file_digest(folder: str) -> str:
    return "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.safetensors")))


def test_adore_leaves_the_document_encoder_unchanged(small_scifact, tiny_model_dir, tmp_path):
    from densekit.data.beir import doc_text, load_beir
    from densekit.models import encode, load_model
    from densekit.retrieval.index import DenseIndex

    beir, _ = small_scifact
    before = _file_digest(tiny_model_dir)
    start = {k: v.clone() for k, v in load_model(tiny_model_dir).state_dict().items()}
    out = train(config(model=tiny_model_dir, output=str(tmp_path / "adore"), mode="adore", beir=str(beir),
                       max_steps=3, batch_size=8, learning_rate=1e-3, adore_depth=50))
    info = json.loads((out / "densekit_train.json").read_text())
    index = DenseIndex.load(info["adore"]["index"])
    dataset = load_beir(beir, "train")
    docs = encode(load_model(tiny_model_dir), [doc_text(dataset.corpus[d]) for d in index.doc_ids],
                  show_progress=False)
    assert np.allclose(index.index.reconstruct_n(0, index.index.ntotal), docs, atol=1e-5)
    assert _file_digest(tiny_model_dir) == before
    assert index.meta["query_model"] == str(out.resolve())
    trained = load_model(str(out)).state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start if k in trained)


def test_star_mode_trains_and_dynamic_modes_need_qrels(small_scifact, tiny_model_dir, tmp_path):
    beir, mined = small_scifact
    out = train(config(model=tiny_model_dir, data=str(mined), output=str(tmp_path / "star"), mode="star",
                       beir=str(beir), max_steps=2, batch_size=8))
    info = json.loads((out / "densekit_train.json").read_text())
    assert info["global_step"] == 2 and np.isfinite(info["train_loss"]) and info["loss"] == "star"
    with pytest.raises(ConfigError, match="needs --beir"):
        train(config(model=tiny_model_dir, data=str(mined), output=str(tmp_path / "x"), mode="ance"))
    with pytest.raises(ConfigError, match="unknown training mode 'nope'"):
        train(config(model=tiny_model_dir, data=str(mined), output=str(tmp_path / "x"), mode="nope"))


def test_refresh_worker_denoises_refreshed_negatives(scifact_dir, minilm_path, tmp_path):
    """The ANCE worker mines through densekit's miner, so a teacher drops a planted copy of a positive."""
    from densekit.data.beir import load_beir
    from densekit.mining.denoise import DenoiseConfig
    from densekit.mining.refresh import RefreshJob, run_refresh
    from tests.helpers import write_beir

    full = load_beir(scifact_dir, "train")
    qids = sorted(full.qrels)[1:5]
    positives = sorted({d for q in qids for d in full.qrels[q]})
    corpus = {d: full.corpus[d] for d in positives + [d for d in full.corpus if d not in positives][:80]}
    qid = qids[0]
    pid = sorted(full.qrels[qid])[0]
    corpus["planted-dup"] = {"title": corpus[pid]["title"], "text": corpus[pid]["text"].replace(". ", ".  ")}
    beir = write_beir(tmp_path / "beir", corpus, {q: full.queries[q] for q in qids},
                      {"train": {q: full.qrels[q] for q in qids}})

    def refresh(state: str, denoise: dict) -> dict:
        job = RefreshJob(checkpoint=minilm_path, base_model=minilm_path, data=str(beir), split="train",
                         state_dir=str(tmp_path / state), max_seq_length=128, num_negatives=3, window=(1, 10),
                         near_duplicate_threshold=0.0, denoise=DenoiseConfig(**denoise))
        return run_refresh(job)

    plain = refresh("plain", {})
    assert "planted-dup" in plain["negatives"][qid] and plain["stats"]["docs_encoded"] == len(corpus)
    teacher = {"teacher": "bi-encoder", "teacher_model": minilm_path, "teacher_options": {"max_seq_length": 128},
               "perc_pos": 0.95}
    denoised = refresh("denoised", teacher)
    assert "planted-dup" not in denoised["negatives"][qid] and denoised["stats"]["denoised"]
    assert len(denoised["negatives"][qid]) == 3  # oversampling refills the dropped one
