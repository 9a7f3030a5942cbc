"""The whole CLI chain on a real SciFact slice with the real all-MiniLM-L6-v2: mine, train, index, search, eval."""

import json

import pytest

from densekit.cli import main
from tests.helpers import scifact_subset

pytestmark = pytest.mark.integration


def test_cli_chain_on_scifact_subset(scifact_dir, minilm_path, tmp_path, capsys):
    data = scifact_subset(scifact_dir, tmp_path / "scifact", n_queries=30, n_docs=250)
    cache = str(tmp_path / "cache")
    mined = tmp_path / "mined.jsonl"
    assert main(["mine", "--data", str(data), "--split", "train", "--retriever", "bm25", "--retriever", "dense",
                 "--model", minilm_path, "--num-negatives", "2", "--window", "2", "20", "--max-seq-length", "128",
                 "--cache-dir", cache, "--output", str(mined)]) == 0
    records = [json.loads(line) for line in mined.read_text().splitlines()]
    assert records and all(len(r["negatives"]) == 2 for r in records)

    model_dir = tmp_path / "model"
    assert main(["train", "--model", minilm_path, "--data", str(mined), "--output", str(model_dir),
                 "--max-steps", "4", "--batch-size", "8", "--max-seq-length", "96", "--learning-rate", "1e-5"]) == 0
    assert (model_dir / "modules.json").exists()

    index_dir = tmp_path / "index"
    assert main(["index", "--model", str(model_dir), "--data", str(data), "--output", str(index_dir),
                 "--max-seq-length", "128", "--cache-dir", "none"]) == 0
    meta = json.loads((index_dir / "meta.json").read_text())
    assert meta["count"] == len(list((data / "corpus.jsonl").read_text().splitlines()))
    assert meta["model"] == str(model_dir)

    capsys.readouterr()
    query = "Vitamin D deficiency and the risk of fractures"
    assert main(["search", "--index", str(index_dir), "-q", query, "-k", "5"]) == 0
    hit = json.loads(capsys.readouterr().out.splitlines()[0])
    assert hit["query"] == query and len(hit["hits"]) == 5
    assert hit["hits"][0]["score"] >= hit["hits"][-1]["score"]

    out = tmp_path / "eval"
    assert main(["eval", "--index", str(index_dir), "--data", str(data), "--split", "test",
                 "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_queries"] == 30
    # 30 queries against 250 documents: a working retriever finds most positives in its top 10
    assert 0.6 < metrics["ndcg_at_10"] <= 1.0 and metrics["recall_at_100"] > 0.9
    run_lines = (out / "run.trec").read_text().splitlines()
    assert len(run_lines) == 30 * 100 and run_lines[0].split()[1] == "Q0"
