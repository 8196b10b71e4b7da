"""The task record every task file is written from, and the MedViLL label string.

MedViLL stores a record's positive CheXpert findings as one string (``"'A', 'B'"``); every
comparison in this package is made on the parsed *set*, because the original's string
comparison treated differently ordered or empty strings as different label sets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from pipeline.records import CHEXPERT_LABELS

#: Splits in the order files and stats list them.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Capitalised split names used in MedViLL file names (``Train.jsonl``, ``I2T_Label_Valid.jsonl``).
FILE_SPLIT: dict[str, str] = {"train": "Train", "valid": "Valid", "test": "Test"}
#: The two JSONL dialects of the original release (docs/formats.md §1): MIMIC has a ``split`` key
#: and writes an empty label set as ``""``; Open-I has no ``split`` key and writes it as ``"''"``.
STYLES: tuple[str, ...] = ("mimic", "openi")

LabelSet = frozenset[str]


@dataclass(frozen=True)
class TaskRecord:
    """One image-report pair as it appears in the task files.

    ``labels`` is ``None`` for an *unlabelled* record (all 14 CheXpert values blank), which is
    different from an empty set (a labelled report with no positive finding). ``images`` lists
    every usable image of the record's study (``img`` first) for the R2Gen export.
    """

    task_id: str
    key: str
    split: str
    labels: LabelSet | None
    text: str
    img: str
    study_id: str
    patient_id: str
    images: tuple[str, ...]


def positive_labels(values: Sequence[float | None]) -> LabelSet | None:
    """The positive findings of 14 label values in ``CHEXPERT_LABELS`` order.

    Only 1.0 counts as positive (uncertain −1, negative 0 and blank are left out, as in the
    original files). Returns ``None`` when every value is blank, so that callers can tell an
    unlabelled record from one with no positive finding.
    """
    if len(values) != len(CHEXPERT_LABELS):
        raise ValueError(f"expected {len(CHEXPERT_LABELS)} label values, got {len(values)}")
    blank = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    if all(blank):
        return None
    return frozenset(
        name
        for name, value, is_blank in zip(CHEXPERT_LABELS, values, blank, strict=True)
        if not is_blank and float(value) == 1.0  # type: ignore[arg-type]
    )


def format_label(labels: Iterable[str], style: str) -> str:
    """The MedViLL label string: quoted names, sorted alphabetically, joined by ``", "``.

    An empty set is ``""`` in the MIMIC style and ``"''"`` in the Open-I style (docs/formats.md §1).
    """
    if style not in STYLES:
        raise ValueError(f"unknown task-file style '{style}'; choose one of {', '.join(STYLES)}")
    names = sorted(labels)
    unknown = [n for n in names if n not in CHEXPERT_LABELS]
    if unknown:
        raise ValueError(f"not CheXpert label names: {unknown}")
    if not names:
        return "" if style == "mimic" else "''"
    return ", ".join(f"'{name}'" for name in names)


def parse_label(label: str) -> LabelSet:
    """Parse a label string back into a set: split on commas, strip spaces and quotes.

    Accepts both empty conventions (``""`` and ``"''"``) and unsorted strings, as the
    docs/formats.md §1 recommends for reading the original Open-I files.
    """
    names = (part.strip().strip("'\"").strip() for part in label.split(","))
    return frozenset(name for name in names if name)


def label_set_name(labels: LabelSet | None) -> str:
    """A readable name of a label set for stats: the MIMIC string, or a marker when empty."""
    if labels is None:
        return "(unlabelled)"
    return format_label(labels, "mimic") or "(no positive finding)"


def image_path(images_dir: Path, image_file: str, image_root: Path) -> str:
    """A processed image's path as task files store it: POSIX, relative to ``image_root``.

    ``images_dir / image_file`` is where the images stage wrote it; both paths are resolved
    against the working directory (DVC runs from the repo root, the default ``image_root``).
    """
    return PurePath(os.path.relpath(images_dir / image_file, image_root)).as_posix()
