"""Adapter for the NIH ChestX-ray14 bounding boxes (``BBox_List_2017.csv``).

Expected layout under the raw root (the NIH Clinical Center release, image archives
``images_001.tar.gz`` … extracted into ``images/``)::

    BBox_List_2017.csv     required: Image Index, Finding Label, Bbox [x, y, w, h]
    Data_Entry_2017.csv    required: Image Index, Finding Labels, Follow-up #, Patient ID,
                           Patient Age, Patient Gender, View Position, …
    images/<Image Index>   1024 × 1024 PNGs
    test_list.txt          optional: the official test images, one Image Index a line
    train_val_list.txt     optional: the official training + validation images

The release writes the box header as ``Bbox [x,y,w,h]`` unquoted, so a CSV reader sees four
columns named ``Bbox [x``, ``y``, ``w`` and ``h]`` (and empty trailing ones); both tables are
read by those names. Records are the images that have at least one box (the localized
evaluation set, 880 images in the release), with patient, view and follow-up number from
``Data_Entry_2017.csv``; a box naming an image that table does not list stays an annotation
and the localized stage rejects it as ``unknown_image``. Boxes are in source pixels, ``x, y``
the upper-left corner. Finding labels are the release's (``Infiltrate`` in the box list,
``Infiltration`` in the data entry table). No reports.

Splits: the release's patient-level lists are honoured when present — ``test_list.txt`` →
``test``, ``train_val_list.txt`` → train or valid by patient hash in the split stage
(:data:`pipeline.splits.TRAIN_OR_VALID`); an image neither lists, or a tree without the
lists, is split by patient hash like any dataset without an official split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.datasets.common import AdapterResult, require_file
from pipeline.datasets.localized_common import (
    BAD_ANNOTATION,
    csv_line,
    image_record,
    number,
    read_release_table,
)
from pipeline.localized.annotations import annotation, unusable
from pipeline.rawfiles import RawInputError, check_id_component
from pipeline.records import Reject
from pipeline.splits import TRAIN_OR_VALID

DATASET = "nih_boxes"
BBOX = "BBox_List_2017.csv"
ENTRY = "Data_Entry_2017.csv"
IMAGES = "images"
LAYOUT = (
    f"NIH ChestX-ray14: <root>/{BBOX} (Image Index, Finding Label, Bbox [x,y,w,h]), "
    f"<root>/{ENTRY} (Image Index, Patient ID, View Position, …) and <root>/{IMAGES}/<Image Index>"
)
BBOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
#: The release's split lists and the official split each stands for.
SPLIT_LISTS: tuple[tuple[str, str], ...] = (
    ("test_list.txt", "test"),
    ("train_val_list.txt", TRAIN_OR_VALID),
)


def official_splits(raw: Path) -> dict[str, str]:
    """Image Index → official split from the release's lists that exist under ``raw``.

    An image in both lists contradicts the release: ValueError naming it and the files."""
    splits: dict[str, str] = {}
    for name, split in SPLIT_LISTS:
        path = raw / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            image = line.strip()
            if not image:
                continue
            if splits.get(image, split) != split:
                raise ValueError(
                    f"{path}: {image} is also in {SPLIT_LISTS[0][0]}; the official lists "
                    "must not share an image"
                )
            splits[image] = split
    return splits


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per boxed image listed in the data entry table, one annotation per box."""
    bbox_path = require_file(raw / BBOX, LAYOUT)
    entry_path = require_file(raw / ENTRY, LAYOUT)
    boxes = read_release_table(bbox_path, BBOX_COLUMNS, LAYOUT)
    entries = {
        row["Image Index"].strip(): row
        for row in read_release_table(entry_path, ENTRY_COLUMNS, LAYOUT).to_dict("records")
    }
    official = official_splits(raw)
    by_image: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for index, row in enumerate(boxes.to_dict("records")):
        by_image.setdefault(row["Image Index"].strip(), []).append((csv_line(index), row))

    result = AdapterResult()
    # images the data entry table names are listed, boxed or not: only files no table names
    # count as unlisted in the ingest stats
    result.listed_paths = {f"{IMAGES}/{name}" for name in entries if name}
    for image_index in sorted(by_image):
        rows = by_image[image_index]
        image_id = Path(image_index).stem if image_index else ""
        for n, (line, row) in enumerate(rows):
            result.annotations.append(box_annotation(image_id or image_index, n, line, row))
        entry = entries.get(image_index)
        if entry is None:  # the annotations become unknown_image rejects downstream
            continue
        try:
            check_id_component(image_index, "Image Index")
        except RawInputError as error:
            result.rejects.append(
                Reject(image_id, "ingest", error.code, f"{entry_path}: {error.message}")
            )
            continue
        extra = {
            "finding_labels": entry["Finding Labels"].strip(),
            "boxes": len(rows),
            **{
                key: entry[column].strip()
                for key, column in (
                    ("follow_up", "Follow-up #"),
                    ("age", "Patient Age"),
                    ("sex", "Patient Gender"),
                )
                if column in entry
            },
        }
        result.records.append(
            image_record(
                DATASET,
                image_id,
                f"{IMAGES}/{image_index}",
                entry["Patient ID"].strip(),
                entry["View Position"].strip().upper(),
                official_split=official.get(image_index, ""),
                extra=extra,
            )
        )
    return result


def box_annotation(image_id: str, n: int, line: int, row: dict[str, str]) -> dict[str, Any]:
    """One ``Bbox [x, y, w, h]`` row as corners, or an unusable row naming the bad value."""
    source = f"{BBOX}:{line}"
    finding = row["Finding Label"].strip()
    try:
        x, y = number(row["Bbox [x"], "x"), number(row["y"], "y")
        width, height = number(row["w"], "w"), number(row["h]"], "h")
    except ValueError as error:
        return unusable(image_id, n, finding, source, BAD_ANNOTATION, str(error))
    return annotation(image_id, n, finding, "box", source, (x, y, x + width, y + height))
