"""Mention labels -> the 14 CheXpert values, and the original's CSV layout (docs/labeler.md §5-6).

The resolution table is the original's, including its asymmetries (negated + uncertain gives
uncertain; No Finding is only ever 1 or blank; "chf"/"heart failure" add an uncertain
Cardiomegaly), because downstream models were trained on exactly these values. The opt-in
``chexpert_plus`` backend aggregates with the radiologist indexers' conventions instead
(:data:`RADIOLOGIST_CONVENTIONS`, docs/labeler_fidelity.md §5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


def resolve(labels: Sequence[float], positive_wins: bool = False) -> float:
    """Combine one category's mention labels with the original's precedence.

    ``positive_wins`` (``chexpert_plus``): a finding stated as present anywhere is present,
    where the original says uncertain when the report also negates and hedges it ("a 2 cm
    nodule", "no other masses", "differential includes a mass").
    """
    if not labels:
        return math.nan
    present = set(labels)
    if len(present) == 1:
        return labels[0]
    if positive_wins and POSITIVE in present:
        return POSITIVE
    if NEGATIVE in present and UNCERTAIN in present:
        return UNCERTAIN
    return POSITIVE  # {0, 1} or {-1, 1}


@dataclass(frozen=True)
class Conventions:
    """How mention labels become report labels, where conventions differ.

    ``no_finding_allows``: observations whose positive or uncertain mention still leaves the
    report "No Finding". ``positive_wins``: see :func:`resolve`.
    """

    no_finding_allows: frozenset[str]
    positive_wins: bool


#: CheXpert's: a support device is no finding; negated + uncertain beats positive.
CHEXPERT_CONVENTIONS = Conventions(frozenset({SUPPORT_DEVICES}), positive_wins=False)
#: The radiologist indexers' of Open-I (the gold ``chexpert_plus`` is measured on): a study
#: with a device in it is not normal, and a finding stated as present is present.
RADIOLOGIST_CONVENTIONS = Conventions(frozenset(), positive_wins=True)


def aggregate(
    mentions: Iterable[tuple[str, str, float]],
    conventions: Conventions = CHEXPERT_CONVENTIONS,
) -> dict[str, float]:
    """(observation, matched text, label) for one report -> {category: value} for all 14."""
    no_finding = True
    by_category: dict[str, list[float]] = {}
    for observation, text, label in mentions:
        positive_or_uncertain = label != NEGATIVE
        if observation not in conventions.no_finding_allows and positive_or_uncertain:
            no_finding = False
        if observation == NO_FINDING:
            continue
        if positive_or_uncertain and text in _CHF_TEXTS:
            by_category.setdefault("Cardiomegaly", []).append(UNCERTAIN)
        by_category.setdefault(observation, []).append(label)
    if no_finding:
        by_category[NO_FINDING] = [POSITIVE]
    return {
        category: resolve(by_category.get(category, []), conventions.positive_wins)
        for category in CHEXPERT_LABELS
    }


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
