"""The dev-set scorer of ``benchmarks/bench_labeler.py``: positives are 1.0 only, micro over all."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_labeler.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_labeler", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_takes_its_references_from_the_repo() -> None:
    fixtures = _bench().FIXTURES.resolve()
    assert fixtures.is_relative_to(BENCH.resolve().parents[1])
    assert (fixtures / "labeled_reports.csv").is_file()
    assert (fixtures / "1.neg_chexpert.xml").is_file()


def test_score_positives_counts_only_ones() -> None:
    bench = _bench()
    nan = math.nan
    predicted = pd.DataFrame(
        {
            "Cardiomegaly": [1.0, -1.0, 0.0, nan, 1.0],
            "Edema": [1.0, 1.0, nan, nan, nan],
            "Fracture": [1.0, 1.0, 1.0, 1.0, 1.0],  # not in the gold: not scored
        }
    )
    gold = pd.DataFrame(
        {"id": list("abcde"), "Cardiomegaly": [1, 1, 0, 0, 0], "Edema": [1, 0, 0, 0, 1]}
    )
    scores = bench.score_positives(predicted, gold)
    assert list(scores.index) == ["Cardiomegaly", "Edema", "micro"]
    # Cardiomegaly: TP 1 (row a), FP 1 (row e), FN 1 (row b: -1 is not positive)
    assert scores.loc["Cardiomegaly", "precision"] == pytest.approx(0.5)
    assert scores.loc["Cardiomegaly", "recall"] == pytest.approx(0.5)
    # Edema: TP 1, FP 1, FN 1; micro: TP 2, FP 2, FN 2
    assert scores.loc["Edema", "f1"] == pytest.approx(0.5)
    assert scores.loc["micro", "f1"] == pytest.approx(0.5)
    assert scores.loc["micro", "gold_positive"] == 4
    with pytest.raises(ValueError, match="4 labeled rows vs 5 gold rows"):
        bench.score_positives(predicted.iloc[:4], gold)
