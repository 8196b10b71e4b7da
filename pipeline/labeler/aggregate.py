"""Mention labels -> the 14 CheXpert values, and the original's CSV layout (docs/labeler.md §5-6).

The resolution table is the original's, including its asymmetries (negated + uncertain gives
uncertain; No Finding is only ever 1 or blank; "chf"/"heart failure" add an uncertain
Cardiomegaly), because downstream models were trained on exactly these values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from pipeline.records import CHEXPERT_LABELS

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
_CHF_TEXTS = frozenset({"chf", "heart failure"})


def mention_label(negation: bool, uncertainty: bool) -> float:
    """Negation wins over uncertainty; an unmarked mention is positive."""
    if negation:
        return NEGATIVE
    if uncertainty:
        return UNCERTAIN
    return POSITIVE


def resolve(labels: Sequence[float]) -> float:
    """Combine one category's mention labels with the original's precedence."""
    if not labels:
        return math.nan
    present = set(labels)
    if len(present) == 1:
        return labels[0]
    if NEGATIVE in present and UNCERTAIN in present:
        return UNCERTAIN
    return POSITIVE  # {0, 1} or {-1, 1}


#: Observations whose positive mention still leaves a report "No Finding", per convention:
#: CheXpert's (a support device is no finding) and the radiologist indexers' of Open-I, whom
#: the opt-in ``chexpert_plus`` backend follows (a study with a device in it is not normal).
DEVICES_ARE_NO_FINDING = frozenset({SUPPORT_DEVICES})
EVERY_MENTION_COUNTS = frozenset[str]()


def aggregate(
    mentions: Iterable[tuple[str, str, float]],
    no_finding_allows: frozenset[str] = DEVICES_ARE_NO_FINDING,
) -> dict[str, float]:
    """(observation, matched text, label) for one report -> {category: value} for all 14.

    ``no_finding_allows``: observations whose positive or uncertain mention does not rule out
    No Finding (CheXpert: Support Devices only).
    """
    no_finding = True
    by_category: dict[str, list[float]] = {}
    for observation, text, label in mentions:
        positive_or_uncertain = label != NEGATIVE
        if observation not in no_finding_allows and positive_or_uncertain:
            no_finding = False
        if observation == NO_FINDING:
            continue
        if positive_or_uncertain and text in _CHF_TEXTS:
            by_category.setdefault("Cardiomegaly", []).append(UNCERTAIN)
        by_category.setdefault(observation, []).append(label)
    if no_finding:
        by_category[NO_FINDING] = [POSITIVE]
    return {category: resolve(by_category.get(category, [])) for category in CHEXPERT_LABELS}


def format_labeled_csv(texts: Sequence[str], labels: pd.DataFrame) -> str:
    """The original's output: ``Reports`` (original text) + the 14 columns, via the same
    ``DataFrame.to_csv(index=False)`` call, so quoting and float formatting (``1.0``/``0.0``/
    ``-1.0``/empty) are pandas' own, byte for byte.
    """
    frame = pd.DataFrame({"Reports": list(texts)})
    for category in CHEXPERT_LABELS:
        frame[category] = labels[category].to_numpy(dtype=float)
    return frame.to_csv(index=False, lineterminator="\n")


def write_labeled_csv(texts: Sequence[str], labels: pd.DataFrame, path: Path) -> None:
    """Write :func:`format_labeled_csv` to ``path`` (UTF-8), atomically via a temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_labeled_csv(texts, labels), encoding="utf-8", newline="")
    tmp.replace(path)
