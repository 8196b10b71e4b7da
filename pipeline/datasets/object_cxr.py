"""Adapter for Object-CXR (JF Healthcare, MIDL 2020 foreign-object detection challenge).

Expected layout under the raw root (the release's CSVs and its zips extracted in place)::

    train.csv          required: image_name, annotation
    dev.csv            optional, same columns (the release's validation set)
    train/<image_name> JPEG images
    dev/<image_name>

``annotation`` is empty for an image without foreign objects, else objects separated by ``;``,
each ``TYPE x1 y1 x2 y2 …`` with TYPE ``0`` rectangle and ``1`` ellipse (both given by the
upper-left and lower-right corners of their bounding box) or ``2`` polygon (``x1 y1 … xn yn``),
in source pixels with the origin at the upper-left corner. Each object becomes one annotation
(finding ``Foreign object``): rectangles as boxes, ellipses and polygons as boxes plus masks.

The release gives no patient ids or views: ``patient_id`` is the image name's stem and the view
is left empty (every image is frontal; localized datasets keep every view unless their
``datasets`` entry sets ``views``).

Splits: the challenge kept its test set; the public release is ``train`` (8,000 images) and
``dev`` (1,000). ``dev`` is held out as our ``test`` split, and ``train`` is divided between
train and valid by patient (here: image) hash in the split stage
(:data:`pipeline.splits.TRAIN_OR_VALID`), so no released training image is ever scored.
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

DATASET = "object_cxr"
#: release folder → official split: dev is the held-out evaluation set (→ test)
SPLITS: tuple[tuple[str, str], ...] = (("train", TRAIN_OR_VALID), ("dev", "test"))
LAYOUT = (
    "Object-CXR: <root>/train.csv (image_name, annotation), optional <root>/dev.csv, and images "
    "<root>/train/<image_name>, <root>/dev/<image_name>"
)
COLUMNS = ("image_name", "annotation")
FINDING = "Foreign object"
#: ANNO_TYPE_IDX → shape, and how many values the shape takes (None = any even count ≥ 6).
SHAPE_CODES: dict[str, tuple[str, int | None]] = {
    "0": ("box", 4),
    "1": ("ellipse", 4),
    "2": ("polygon", None),
}


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per image of train.csv and dev.csv, one annotation per object."""
    require_file(raw / "train.csv", LAYOUT)
    result = AdapterResult()
    for folder, split in SPLITS:
        table_path = raw / f"{folder}.csv"
        if not table_path.is_file():
            continue
        table = read_release_table(table_path, COLUMNS, LAYOUT)
        for index, row in enumerate(table.to_dict("records")):
            line = csv_line(index)
            name = row["image_name"].strip()
            try:
                check_id_component(name, "image_name")
                if not name:
                    raise RawInputError("bad_metadata_row", "empty image_name")
            except RawInputError as error:
                result.rejects.append(
                    Reject(
                        name or f"{folder}.csv:{line}",
                        "ingest",
                        error.code,
                        f"{table_path} line {line}: {error.message}",
                    )
                )
                continue
            image_id = Path(name).stem
            objects = [part for part in row["annotation"].split(";") if part.strip()]
            for n, text in enumerate(objects):
                result.annotations.append(
                    object_annotation(image_id, n, f"{folder}.csv:{line}", text)
                )
            result.records.append(
                image_record(
                    DATASET,
                    image_id,
                    f"{folder}/{name}",
                    image_id,
                    "",
                    official_split=split,
                    extra={"objects": len(objects)},
                )
            )
    return result


def object_annotation(image_id: str, n: int, source: str, text: str) -> dict[str, Any]:
    """One ``TYPE x1 y1 …`` object as an annotation, or an unusable row saying why."""
    parts = text.split()
    code, values = parts[0], parts[1:]
    if code not in SHAPE_CODES:
        return unusable(
            image_id,
            n,
            FINDING,
            source,
            BAD_ANNOTATION,
            f"object {text.strip()!r}: shape code {code!r} is not 0, 1 or 2",
        )
    shape, count = SHAPE_CODES[code]
    try:
        coords = [number(v, "coordinate") for v in values]
    except ValueError as error:
        return unusable(
            image_id, n, FINDING, source, BAD_ANNOTATION, f"object {text.strip()!r}: {error}"
        )
    if (count is not None and len(coords) != count) or (
        count is None and (len(coords) < 6 or len(coords) % 2)
    ):
        wanted = f"{count}" if count is not None else "an even number ≥ 6 of"
        return unusable(
            image_id,
            n,
            FINDING,
            source,
            BAD_ANNOTATION,
            f"object {text.strip()!r}: a {shape} takes {wanted} coordinates, got {len(coords)}",
        )
    return annotation(image_id, n, FINDING, shape, source, coords)
