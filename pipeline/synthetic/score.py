"""Score the built-in CheXpert labeler against a synthetic corpus's ground truth.

The corpus's reports were written from known labels, so any disagreement is either a labeler
error or an ambiguous template; the generator is tuned until micro F1 over positives (a label is
"positive" when it is 1) is at least 0.95, and this score is how that is checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.records import CHEXPERT_LABELS
from pipeline.synthetic.writer import read_ground_truth


@dataclass(frozen=True)
class LabelerScore:
    """Micro precision/recall/F1 over positive labels, per-label F1 and exact-match share."""

    precision: float
    recall: float
    f1: float
    exact_match: float
    reports: int
    per_label_f1: dict[str, float] = field(default_factory=dict)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def score_labels(truth: Sequence[Mapping[str, float]], predicted: pd.DataFrame) -> LabelerScore:
    """Compare ``truth`` (one mapping per report) with the labeler's rows in the same order."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} ground-truth rows but {len(predicted)} labelled rows")
    counts = {name: [0, 0, 0] for name in CHEXPERT_LABELS}  # tp, fp, fn
    exact = 0
    for expected, (_, row) in zip(truth, predicted.iterrows(), strict=True):
        same = True
        for name in CHEXPERT_LABELS:
            want, got = float(expected[name]), float(row[name])
            a, b = want == 1.0, got == 1.0
            counts[name][0] += a and b
            counts[name][1] += b and not a
            counts[name][2] += a and not b
            same &= (math.isnan(want) and math.isnan(got)) or want == got
        exact += same
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    return LabelerScore(
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn) if tp + fn else 1.0,
        f1=_f1(tp, fp, fn),
        exact_match=exact / len(truth) if truth else 1.0,
        reports=len(truth),
        per_label_f1={name: _f1(*c) for name, c in counts.items() if sum(c)},
    )


def score_corpus(raw: Path, workers: int = 1) -> LabelerScore:
    """Label every report of the corpus at ``raw`` and score it against ``labels.csv``."""
    from pipeline.labeler import label_reports

    truth = read_ground_truth(raw)
    studies = sorted(truth)
    texts = [(raw / "reports" / f"{study}.txt").read_text(encoding="utf-8") for study in studies]
    predicted = label_reports(texts, workers=workers)
    return score_labels([truth[s] for s in studies], predicted)
