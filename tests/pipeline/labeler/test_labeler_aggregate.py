"""Aggregation table and CSV layout (docs/labeler.md §5-6)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.labeler.aggregate import (
    RADIOLOGIST_CONVENTIONS,
    aggregate,
    format_labeled_csv,
    mention_label,
    resolve,
)
from pipeline.records import CHEXPERT_LABELS


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([1.0], 1.0),
        ([0.0], 0.0),
        ([-1.0], -1.0),
        ([0.0, 0.0], 0.0),
        ([1.0, 0.0, -1.0], -1.0),
        ([0.0, -1.0], -1.0),
        ([0.0, 1.0], 1.0),
        ([-1.0, 1.0], 1.0),
    ],
)
def test_resolution_table(labels: list[float], expected: float) -> None:
    assert resolve(labels) == expected


def test_mention_label_negation_wins() -> None:
    assert (mention_label(True, True), mention_label(False, True), mention_label(False, False)) == (
        0.0,
        -1.0,
        1.0,
    )
    assert math.isnan(resolve([]))


def test_no_finding_blockers_support_devices_and_chf() -> None:
    empty = aggregate([])
    assert empty["No Finding"] == 1.0
    assert all(math.isnan(v) for k, v in empty.items() if k != "No Finding")
    assert aggregate([("Support Devices", "tube", 1.0)])["No Finding"] == 1.0
    assert aggregate([("Edema", "edema", 0.0)])["No Finding"] == 1.0
    blocked = aggregate([("No Finding", "scoliosis", 1.0)])
    assert math.isnan(blocked["No Finding"])
    assert aggregate([("No Finding", "scoliosis", 0.0)])["No Finding"] == 1.0
    chf = aggregate([("Edema", "chf", 1.0)])
    assert (chf["Edema"], chf["Cardiomegaly"], math.isnan(chf["No Finding"])) == (1.0, -1.0, True)
    assert math.isnan(aggregate([("Edema", "chf", 0.0)])["Cardiomegaly"])
    assert math.isnan(aggregate([("Edema", "CHF", 1.0)])["Cardiomegaly"])  # case-sensitive
    assert list(aggregate([])) == list(CHEXPERT_LABELS)


def test_csv_layout() -> None:
    frame = pd.DataFrame(
        [aggregate([("Edema", "edema", 0.0)]), aggregate([("Edema", "chf", -1.0)])]
    )
    text = format_labeled_csv(["No edema, ok", 'multi\nline "q"'], frame)
    assert text.splitlines()[0] == "Reports," + ",".join(CHEXPERT_LABELS)
    assert text.splitlines()[1] == '"No edema, ok",1.0,,,,,0.0,,,,,,,,'
    assert text.endswith('"multi\nline ""q""",,,-1.0,,,-1.0,,,,,,,,\n')


def test_radiologist_conventions_for_chexpert_plus() -> None:
    """A finding stated as present anywhere is present; a device makes a study abnormal."""
    assert resolve([1.0, 0.0, -1.0]) == -1.0  # the original's precedence
    assert resolve([1.0, 0.0, -1.0], positive_wins=True) == 1.0
    assert resolve([0.0, -1.0], positive_wins=True) == -1.0
    device = [("Support Devices", "picc", 1.0)]
    assert aggregate(device)["No Finding"] == 1.0
    plus = aggregate(device, RADIOLOGIST_CONVENTIONS)
    assert math.isnan(plus["No Finding"]) and plus["Support Devices"] == 1.0
    mixed = [
        ("Lung Lesion", "nodule", 1.0),
        ("Lung Lesion", "mass", 0.0),
        ("Lung Lesion", "mass", -1.0),
    ]
    assert aggregate(mixed)["Lung Lesion"] == -1.0
    assert aggregate(mixed, RADIOLOGIST_CONVENTIONS)["Lung Lesion"] == 1.0
