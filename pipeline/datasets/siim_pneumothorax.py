"""Adapter for SIIM-ACR Pneumothorax Segmentation (the original Kaggle release).

Expected layout under the raw root::

    train-rle.csv    required: ImageId, EncodedPixels (the release writes `` EncodedPixels``
                     with a leading space; names are stripped)
    dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm

``EncodedPixels`` is SIIM's relative, column-major run-length code on the image's own grid
(1024 × 1024 in the release; pipeline/localized/rle.py), ``-1`` for an image without
pneumothorax. An image with several pneumothoraces has one row per region, each becoming one
annotation. The DICOM header gives ``PatientID`` (the patient), ``ViewPosition`` and the grid
size; without pydicom the grid is taken as 1024 × 1024 and the patient as the ImageId.
``image_id`` = ImageId (the SOP Instance UID, also the file stem). No reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.datasets.common import AdapterResult, LayoutError, require_file
from pipeline.datasets.localized_common import (
    BAD_ANNOTATION,
    csv_line,
    dicom_header,
    image_record,
    read_release_table,
)
from pipeline.localized.annotations import annotation, unusable
from pipeline.localized.rle import SIIM_EMPTY
from pipeline.records import Reject

DATASET = "siim_pneumothorax"
RLE_CSV = "train-rle.csv"
IMAGES = "dicom-images-train"
LAYOUT = (
    f"SIIM-ACR Pneumothorax: <root>/{RLE_CSV} (ImageId, EncodedPixels) and "
    f"<root>/{IMAGES}/<study UID>/<series UID>/<ImageId>.dcm"
)
COLUMNS = ("ImageId", "EncodedPixels")
FINDING = "Pneumothorax"
#: Grid of the release's masks, used when the DICOM header cannot be read.
RELEASE_GRID = (1024, 1024)


def dicom_files(raw: Path) -> dict[str, str]:
    """ImageId (file stem) → path relative to the root, for every ``.dcm`` under the images
    folder; symlinked folders are not followed. A stem found twice keeps its first path in
    sorted order."""
    folder = raw / IMAGES
    if not folder.is_dir():
        raise LayoutError(f"required folder not found: {folder}\nexpected layout: {LAYOUT}")
    found: dict[str, str] = {}
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".dcm"):
                relative = (Path(current) / name).relative_to(raw).as_posix()
                found.setdefault(name[: -len(".dcm")], relative)
    return found


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per ImageId of ``train-rle.csv`` (sorted), one mask annotation per region."""
    table_path = require_file(raw / RLE_CSV, LAYOUT)
    table = read_release_table(table_path, COLUMNS, LAYOUT)
    files = dicom_files(raw)
    rows_by_id: dict[str, list[tuple[int, str]]] = {}
    for index, row in enumerate(table.to_dict("records")):
        rows_by_id.setdefault(row["ImageId"].strip(), []).append(
            (csv_line(index), row["EncodedPixels"].strip())
        )

    result = AdapterResult()
    for image_id in sorted(rows_by_id):
        rows = rows_by_id[image_id]
        lines = ", ".join(str(line) for line, _ in rows)
        if image_id not in files:
            result.rejects.append(
                Reject(
                    image_id or f"{RLE_CSV}:{lines}",
                    "ingest",
                    "image_missing",
                    f"{table_path} line(s) {lines}: no {image_id or '<empty ImageId>'}.dcm "
                    f"under {raw / IMAGES}",
                )
            )
            continue
        image_path = files[image_id]
        header = dicom_header(raw, image_path)
        grid = (header["width"], header["height"]) if "width" in header else RELEASE_GRID
        regions = [(line, code) for line, code in rows if code != SIIM_EMPTY]
        for n, (line, code) in enumerate(regions):
            source = f"{RLE_CSV}:{line}"
            if not code:
                result.annotations.append(
                    unusable(image_id, n, FINDING, source, BAD_ANNOTATION, "empty EncodedPixels")
                )
                continue
            result.annotations.append(
                annotation(image_id, n, FINDING, "siim_rle", source, rle=code, rle_size=grid)
            )
        result.records.append(
            image_record(
                DATASET,
                image_id,
                image_path,
                header.get("patient_id") or image_id,
                header.get("view", ""),
                extra={"pneumothorax": int(bool(regions)), "regions": len(regions)},
            )
        )
    return result
