"""The pinned reference scores of ``tests/regressions/*.yaml`` (pyserini-style), reproduced to 4 decimals.

The SciFact zero-shot condition encodes the whole corpus (5,183 abstracts): a few minutes on a 2-core CPU.
"""

from pathlib import Path

import pytest

from densekit.evaluation.regressions import read_regressions, run_condition

FILES = sorted((Path(__file__).parent / "regressions").glob("*.yaml"))
CONDITIONS = [(path, c) for path in FILES for c in read_regressions(path).conditions]


@pytest.mark.integration
@pytest.mark.parametrize("path, condition", CONDITIONS, ids=[f"{p.stem}:{c.name}" for p, c in CONDITIONS])
def test_pinned_scores(data_dir, path, condition):
    regressions = read_regressions(path)
    measured = run_condition(condition, str(data_dir / "beir" / regressions.data) if regressions.data else None,
                             regressions.split)
    for metric, pinned in condition.scores.items():
        assert round(measured[metric], 4) == pytest.approx(pinned, abs=1e-9), (condition.name, metric, measured[metric])


def test_the_regression_files_cover_the_references():
    names = {c.name for _, c in CONDITIONS}
    assert {"bm25-bm25s", "bm25-lucene", "all-MiniLM-L6-v2-zero-shot", "all-MiniLM-L6-v2-stsb"} <= names
