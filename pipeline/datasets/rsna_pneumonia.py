"""Adapter for the RSNA Pneumonia Detection Challenge (Kaggle, stage 2 training set).

Expected layout under the raw root (the release as downloaded)::

    stage_2_train_labels.csv        required: patientId, x, y, width, height, Target
    stage_2_train_images/<patientId>.dcm
    stage_2_detailed_class_info.csv optional, not read

One image per ``patientId`` (the release has one radiograph per patient), so ``image_id`` =
``patient_id`` = ``study_id`` = patientId; the DICOM's ``ViewPosition`` (PA/AP) is read from
its header when pydicom is installed. Every ``Target = 1`` row is one box of a lung opacity
suspicious for pneumonia, in source pixels (``x, y`` = upper-left corner); ``Target = 0`` rows
mark images without one (``extra_json.target`` = 0). There are no reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.datasets.common import AdapterResult, require_file
from pipeline.datasets.localized_common import (
    BAD_ANNOTATION,
    csv_line,
    dicom_header,
    image_record,
    number,
    read_release_table,
)
from pipeline.localized.annotations import annotation, unusable
from pipeline.rawfiles import RawInputError, check_id_component
from pipeline.records import Reject

DATASET = "rsna_pneumonia"
LABELS = "stage_2_train_labels.csv"
IMAGES = "stage_2_train_images"
LAYOUT = (
    f"RSNA Pneumonia Detection: <root>/{LABELS} (patientId, x, y, width, height, Target) and "
    f"<root>/{IMAGES}/<patientId>.dcm"
)
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
#: The release's class name for a Target = 1 box.
FINDING = "Lung Opacity"


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per patientId (sorted), one box annotation per Target = 1 row."""
    labels_path = require_file(raw / LABELS, LAYOUT)
    table = read_release_table(labels_path, COLUMNS, LAYOUT)
    rows_by_id: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for index, row in enumerate(table.to_dict("records")):
        rows_by_id.setdefault(row["patientId"].strip(), []).append((csv_line(index), row))

    result = AdapterResult()
    for patient_id in sorted(rows_by_id):
        rows = rows_by_id[patient_id]
        lines = ", ".join(str(line) for line, _ in rows)
        if not patient_id:
            result.rejects.append(
                Reject(
                    f"{LABELS}:{lines}",
                    "ingest",
                    "bad_metadata_row",
                    f"{labels_path} line(s) {lines}: empty patientId",
                )
            )
            continue
        try:
            check_id_component(patient_id, "patientId")
        except RawInputError as error:
            result.rejects.append(
                Reject(
                    patient_id,
                    "ingest",
                    error.code,
                    f"{labels_path} line(s) {lines}: {error.message}",
                )
            )
            continue
        image_path = f"{IMAGES}/{patient_id}.dcm"
        header = dicom_header(raw, image_path)
        positives = [(line, row) for line, row in rows if row["Target"].strip() != "0"]
        annotations = [
            row_annotation(patient_id, n, line, row) for n, (line, row) in enumerate(positives)
        ]
        result.annotations.extend(annotations)
        result.records.append(
            image_record(
                DATASET,
                patient_id,
                image_path,
                header.get("patient_id") or patient_id,
                header.get("view", ""),
                extra={
                    "target": int(bool(annotations)),
                    "boxes": sum(not a["problem_code"] for a in annotations),
                },
            )
        )
    return result


def row_annotation(patient_id: str, n: int, line: int, row: dict[str, str]) -> dict[str, Any]:
    """The box of one Target = 1 row (``x, y, width, height`` → corners), or an unusable row."""
    source = f"{LABELS}:{line}"
    target = row["Target"].strip()
    if target != "1":
        return unusable(
            patient_id, n, FINDING, source, BAD_ANNOTATION, f"Target {target!r} is neither 0 nor 1"
        )
    try:
        x, y = number(row["x"], "x"), number(row["y"], "y")
        width, height = number(row["width"], "width"), number(row["height"], "height")
    except ValueError as error:
        return unusable(patient_id, n, FINDING, source, BAD_ANNOTATION, str(error))
    return annotation(patient_id, n, FINDING, "box", source, (x, y, x + width, y + height))
