"""Adapter for MIMIC-CXR-JPG 2.x with the MIMIC-CXR report texts merged into the same tree.

Expected layout under the raw root (PhysioNet's own layout; the reports come from MIMIC-CXR's
``mimic-cxr-reports.zip``, unzipped into the same ``files/`` folder)::

    mimic-cxr-2.0.0-metadata.csv.gz    required: dicom_id, subject_id, study_id, ViewPosition, …
    mimic-cxr-2.0.0-split.csv.gz       required: dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv.gz    optional here; read by the label stage's csv backend
    files/p10/p10000032/s50414267/<dicom_id>.jpg
    files/p10/p10000032/s50414267.txt

Uncompressed ``.csv`` files with the same names are accepted too.

Record ids, chosen to match the MedViLL task files and the report file names:

* ``image_id`` = dicom_id;
* ``patient_id`` = subject_id as a plain string (``"10000032"``);
* ``study_id`` = ``"s" + study_id`` (``"s50414267"``), as in MedViLL's JSONL ids and in the
  report file stem. The numeric ids are kept in extra_json (``subject_id``, ``study_id``) for
  joins with the CheXpert/NegBio CSVs, which use numbers.

One record per metadata row, even when the JPG is absent: the ingest stage's common check
rejects it as ``image_missing`` with the path. A missing report rejects every image of its
study (``report_missing``), since a report-less image cannot be a vision-language pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.datasets.common import (
    AdapterResult,
    extra_json,
    load_report,
    require_file,
)
from pipeline.rawfiles import RawInputError, check_id_component, read_csv_table
from pipeline.records import Reject

DATASET = "mimic_cxr"
METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
LAYOUT = (
    f"MIMIC-CXR-JPG 2.x: <root>/{METADATA}, <root>/{SPLIT}, images "
    "<root>/files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg and reports "
    "<root>/files/pXX/p<subject_id>/s<study_id>.txt (XX = first two digits of subject_id)"
)
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
SPLIT_COLUMNS = ("dicom_id", "split")
#: MIMIC calls the validation split "validate"; the pipeline uses "valid" everywhere.
SPLITS = {"train": "train", "validate": "valid", "valid": "valid", "test": "test"}
#: Metadata columns kept in extra_json when present (image size and acquisition details).
EXTRA_COLUMNS = (
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "PerformedProcedureStepDescription",
    "ViewCodeSequence_CodeMeaning",
    "ProcedureCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)


def find_table(raw: Path, name: str) -> Path:
    """``name`` (``.csv.gz``) or its uncompressed ``.csv`` twin; the error names the ``.gz``."""
    plain = raw / name.removesuffix(".gz")
    if not (raw / name).is_file() and plain.is_file():
        return plain
    return require_file(raw / name, LAYOUT)


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A PhysioNet CSV as strings (ids keep their digits exactly; blanks become "").

    A table that cannot be read whole (truncated or fake gzip, empty file, binary junk,
    missing columns) raises ValueError naming the file and the problem: a run on half a
    metadata table would silently drop records.
    """
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing} (found {list(frame.columns)}); "
            f"expected layout: {LAYOUT}"
        )
    return frame


def study_dir(subject_id: str, study_id: str) -> str:
    """``files/pXX/p<subject>/s<study>`` relative to the root (XX = first two subject digits)."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}"


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per metadata row, sorted by (subject, study, dicom_id)."""
    metadata = read_table(find_table(raw, METADATA), METADATA_COLUMNS)
    split_path = find_table(raw, SPLIT)
    splits_table = read_table(split_path, SPLIT_COLUMNS)
    splits = dict(zip(splits_table["dicom_id"], splits_table["split"], strict=True))
    extra_columns = [c for c in EXTRA_COLUMNS if c in metadata.columns]

    result = AdapterResult()
    reports: dict[str, tuple[str, str | None] | None] = {}
    # column-wise, not one dict per metadata row: MIMIC-CXR has 377k rows of 12 columns
    metadata = metadata.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    columns = ["dicom_id", "subject_id", "study_id", "ViewPosition", *extra_columns]
    for values in zip(*(metadata[c].tolist() for c in columns), strict=True):
        row = dict(zip(columns, values, strict=True))
        dicom_id = row["dicom_id"].strip()
        subject_id, study_id = row["subject_id"].strip(), row["study_id"].strip()
        try:
            check_id_component(dicom_id, "dicom_id")
        except RawInputError as error:
            result.rejects.append(
                Reject(dicom_id, "ingest", error.code, f"{raw / METADATA}: {error.message}")
            )
            continue
        if not (dicom_id and subject_id.isdigit() and study_id.isdigit()):
            result.rejects.append(
                Reject(
                    dicom_id or f"{subject_id}/{study_id}",
                    "ingest",
                    "bad_metadata_row",
                    f"{raw / METADATA}: row needs a dicom_id and numeric subject_id/study_id "
                    f"(got dicom_id={dicom_id!r}, subject_id={subject_id!r}, "
                    f"study_id={study_id!r})",
                )
            )
            continue
        folder = study_dir(subject_id, study_id)
        report_rel = f"{folder}.txt"
        if report_rel not in reports:
            reports[report_rel] = load_report(raw, report_rel)
        report = reports[report_rel]
        if isinstance(report, RawInputError):
            result.rejects.append(
                Reject(dicom_id, "ingest", report.code, f"{report.message} (image {dicom_id})")
            )
            continue
        if report is None:
            result.rejects.append(
                Reject(
                    dicom_id,
                    "ingest",
                    "report_missing",
                    f"{raw / report_rel}: report file not found for study s{study_id} "
                    f"(image {dicom_id})",
                )
            )
            continue
        text, encoding_note = report
        extra: dict[str, Any] = {
            "subject_id": subject_id,
            "study_id": study_id,
            "report_file": report_rel,
        }
        extra.update({c: row[c] for c in extra_columns if row[c] != ""})
        raw_split = splits.get(dicom_id)
        if raw_split is None:
            extra["split_note"] = f"dicom_id not in {split_path.name}"
        elif raw_split not in SPLITS:
            extra["split_note"] = f"unknown split value {raw_split!r} in {split_path.name}"
        if encoding_note:
            extra["report_encoding"] = encoding_note
        result.records.append(
            {
                "dataset": DATASET,
                "image_id": dicom_id,
                "patient_id": subject_id,
                "study_id": f"s{study_id}",
                "view": row["ViewPosition"].strip().upper(),
                "image_path": f"{folder}/{dicom_id}.jpg",
                "report_text": text,
                "official_split": SPLITS.get(raw_split or "", ""),
                "synthetic_report": False,
                "extra_json": extra_json(extra),
            }
        )
    return result
