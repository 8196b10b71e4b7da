"""Adapter for the embedded demo dataset (``data/sample/``) and any tree with the same manifest.

Layout (see ``data/sample/README.md``)::

    manifest.csv        one row per image: image_id, patient_id, study_id, view, image, report,
                        synthetic (+ optional study_date, source, source_patient_id,
                        source_labels, report_source, split)
    images/...          image files; ``image`` is relative to the root
    reports/<study>.txt one report per study; ``report`` is relative to the root

The manifest is explicit because no permissively licensed source pairs real reports with these
images: every pairing, patient and study id is stated there rather than inferred from names.
An empty ``view`` means "ask the image": for DICOM files the header's ViewPosition is used, so
the demo carries a real view read from a real header; anything else stays "" (unknown).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pipeline.datasets.common import AdapterResult, extra_json, load_report, require_file
from pipeline.rawfiles import RawInputError, resolve_under
from pipeline.records import Reject

DATASET = "sample"
LAYOUT = (
    "<root>/manifest.csv (columns image_id, patient_id, study_id, view, image, report, "
    "synthetic), images and reports at the relative paths the manifest gives "
    "(e.g. images/nih_chestxray14/00000001_000_xrv512.png, reports/S01.txt)"
)
REQUIRED_COLUMNS = ("image_id", "patient_id", "study_id", "view", "image", "report", "synthetic")
#: Manifest columns copied into extra_json when present (provenance for the demo).
EXTRA_COLUMNS = ("study_date", "source", "source_patient_id", "source_labels", "report_source")
SPLITS = {"train": "train", "valid": "valid", "validate": "valid", "test": "test", "": ""}
BOOLEANS = {"true": True, "false": False}


def dicom_view(path: Path) -> tuple[str, str]:
    """ViewPosition from a DICOM header (upper case) and where the value came from.

    Only the header is read (no pixel data). pydicom is the optional ``dicom`` extra; without it
    the view stays unknown and the note says why, so the view filter's reject explains itself.
    """
    try:
        import pydicom
    except ImportError:
        return "", "unknown: pydicom (medvill[dicom]) not installed"
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        return "", f"unknown: DICOM header unreadable ({error})"
    view = str(header.get("ViewPosition", "") or "").strip().upper()
    return view, "dicom_header" if view else "unknown: DICOM header has no ViewPosition"


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Manifest rows as strings; a missing required column names the file and the columns."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                found = f"found {columns}" if columns else "the file is empty"
                raise ValueError(
                    f"{path}: missing column(s) {missing} ({found}); expected layout: {LAYOUT}"
                )
            return [
                {k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader
            ]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not a UTF-8 CSV (undecodable byte at offset {error.start})"
        ) from error
    except csv.Error as error:
        raise ValueError(f"{path}: malformed CSV: {error}") from error


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """One record per manifest row; rows whose report is missing or invalid become rejects."""
    manifest = require_file(raw / "manifest.csv", LAYOUT)
    result = AdapterResult()
    reports: dict[str, tuple[str, str | None] | None] = {}
    rows = read_manifest(manifest)
    for line, row in sorted(
        enumerate(rows, start=2), key=lambda item: (item[1]["image_id"], item[1]["image"])
    ):
        image_id = row["image_id"]
        where = f"{manifest} line {line}"
        synthetic = BOOLEANS.get(row["synthetic"].lower())
        split = SPLITS.get(row.get("split", "").lower())
        if not image_id or synthetic is None or split is None:
            result.rejects.append(
                Reject(
                    image_id or f"line{line}",
                    "ingest",
                    "bad_manifest_row",
                    f"{where}: needs a non-empty image_id, synthetic true/false and split "
                    f"train/valid/test or empty (got image_id={image_id!r}, "
                    f"synthetic={row['synthetic']!r}, split={row.get('split', '')!r})",
                )
            )
            result.listed_paths.add(row["image"])
            continue
        report_path = raw / row["report"]
        if row["report"] not in reports:
            reports[row["report"]] = load_report(raw, row["report"])
        report = reports[row["report"]]
        if isinstance(report, RawInputError):
            result.rejects.append(
                Reject(image_id, "ingest", report.code, f"{report.message} ({where})")
            )
            result.listed_paths.add(row["image"])
            continue
        if report is None:
            result.listed_paths.add(row["image"])
            result.rejects.append(
                Reject(
                    image_id,
                    "ingest",
                    "report_missing",
                    f"{report_path}: report file not found (study {row['study_id']}, {where})",
                )
            )
            continue
        try:
            image_path = resolve_under(raw, row["image"])
        except RawInputError as error:
            result.rejects.append(
                Reject(image_id, "ingest", error.code, f"{error.message} ({where})")
            )
            result.listed_paths.add(row["image"])
            continue
        text, encoding_note = report
        extra: dict[str, Any] = {c: row[c] for c in EXTRA_COLUMNS if row.get(c)}
        extra["report_file"] = Path(row["report"]).as_posix()
        view = row["view"].upper()
        if not view and image_path.suffix.lower() == ".dcm" and image_path.is_file():
            view, extra["view_source"] = dicom_view(image_path)
        if encoding_note:
            extra["report_encoding"] = encoding_note
        result.records.append(
            {
                "dataset": DATASET,
                "image_id": image_id,
                "patient_id": row["patient_id"],
                "study_id": row["study_id"],
                "view": view,
                "image_path": Path(row["image"]).as_posix(),
                "report_text": text,
                "official_split": split,
                "synthetic_report": synthetic,
                "extra_json": extra_json(extra),
            }
        )
    return result
