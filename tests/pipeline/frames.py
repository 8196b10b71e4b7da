"""Builders for small stage tables used by several test modules (real column layout)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pipeline.params import DatasetPaths
from pipeline.records import CHEXPERT_LABELS, INGEST_COLUMNS
from pipeline.sentences import split_sentences


def dataset_paths(tmp_path: Path, name: str = "toy") -> DatasetPaths:
    return DatasetPaths(
        name=name,
        adapter="sample",
        raw=tmp_path / "raw",
        interim=tmp_path / "interim" / name,
        shards=tmp_path / "shards" / name,
    )


def labelled_records(rows: list[dict]) -> pd.DataFrame:
    """Rows with the columns of ``label/records.parquet``; missing fields get neutral values.

    Each row needs at least ``image_id`` and ``patient_id``; ``positives`` lists the
    observations labelled 1.0 (all others blank).
    """
    out = []
    for row in rows:
        positives = set(row.get("positives", ()))
        record = {
            "dataset": row.get("dataset", "toy"),
            "image_id": row["image_id"],
            "patient_id": row["patient_id"],
            "study_id": row.get("study_id", "s" + row["image_id"]),
            "view": row.get("view", "PA"),
            "image_path": row.get("image_path", f"images/{row['image_id']}.png"),
            "report_text": row.get("text", "IMPRESSION: No acute process."),
            "official_split": row.get("official_split", ""),
            "synthetic_report": True,
            "extra_json": "{}",
            "findings": "",
            "impression": row.get("text", "No acute process."),
            "chosen_text": row.get("text", "No acute process."),
            "chosen_section": "impression",
            "sentences_json": json.dumps(
                split_sentences(row.get("text", "No acute process.")), ensure_ascii=False
            ),
        }
        for label in CHEXPERT_LABELS:
            record[label] = 1.0 if label in positives else math.nan
        out.append(record)
    frame = pd.DataFrame(out)
    assert set(INGEST_COLUMNS) <= set(frame.columns)
    return frame
