"""Helpers shared by the detection / segmentation adapters (RSNA, SIIM-ACR, NIH boxes,
Object-CXR): their release tables, the DICOM header fields they need, and one record per image.

These datasets have images and regions but no reports: records carry an empty
``report_text`` and only the ingest, images and localized stages run on them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.datasets.common import extra_json
from pipeline.rawfiles import RawInputError, read_csv_table, resolve_under

#: Reject code of an annotation row whose values the adapter cannot read.
BAD_ANNOTATION = "bad_annotation"


def read_release_table(path: Path, columns: tuple[str, ...], layout: str) -> pd.DataFrame:
    """A release CSV as strings, column names stripped (SIIM writes `` EncodedPixels``).

    Missing columns raise ValueError naming the file, the columns found and the layout.
    """
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing} (found {list(frame.columns)}); "
            f"expected layout: {layout}"
        )
    return frame


def csv_line(index: int) -> int:
    """The 1-based line of data row ``index`` in a CSV with one header line."""
    return index + 2


def number(text: str, what: str) -> float:
    """A finite float from a CSV cell, or ValueError naming ``what`` and the value."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not a finite number")
    return value


def dicom_header(raw: Path, relative: str) -> dict[str, Any]:
    """ViewPosition, PatientID, Rows and Columns of a DICOM, without its pixels.

    Empty when the file is missing or unreadable, or pydicom is not installed: the images
    stage then rejects the file with the precise reason, so ingest need not.
    """
    try:
        import pydicom
    except ImportError:
        return {}
    try:
        path = resolve_under(raw, relative)
    except RawInputError:
        return {}
    if not path.is_file():  # missing, a folder or a FIFO: the images stage says which
        return {}
    try:  # the header only: a release of 30,000 DICOMs is not read whole at ingest
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # OSError, and the many types pydicom raises on malformed headers
        return {}
    header: dict[str, Any] = {
        "view": str(ds.get("ViewPosition", "") or "").strip().upper(),
        "patient_id": str(ds.get("PatientID", "") or "").strip(),
    }
    if "Rows" in ds and "Columns" in ds:
        header["width"], header["height"] = int(ds.Columns), int(ds.Rows)
    return header


def image_record(
    dataset: str,
    image_id: str,
    image_path: str,
    patient_id: str,
    view: str,
    official_split: str = "",
    study_id: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ingest record of an image without a report."""
    return {
        "dataset": dataset,
        "image_id": image_id,
        "patient_id": patient_id,
        "study_id": study_id or image_id,
        "view": view,
        "image_path": image_path,
        "report_text": "",
        "official_split": official_split,
        "synthetic_report": False,
        "extra_json": extra_json(extra or {}),
    }
