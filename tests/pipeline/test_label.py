from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.label import run_stage
from pipeline.records import CHEXPERT_LABELS, read_parquet, write_parquet
from tests.pipeline.frames import dataset_paths, labelled_records


def _sections_records(paths, rows: list[dict]) -> pd.DataFrame:
    frame = labelled_records(rows).drop(columns=list(CHEXPERT_LABELS))
    write_parquet(frame, paths.stage_dir("sections") / "records.parquet")
    return frame


def _write_chexpert_csv(path: Path) -> None:
    """A miniature mimic-cxr-2.0.0-chexpert.csv.gz: numeric ids, labels as in the release."""
    rows = []
    for study, cardiomegaly, edema in ((50000001, 1.0, None), (50000002, 0.0, -1.0)):
        row = {"subject_id": 10000001, "study_id": study}
        row.update(dict.fromkeys(CHEXPERT_LABELS))
        row["Cardiomegaly"], row["Edema"] = cardiomegaly, edema
        rows.append(row)
    with gzip.open(path, "wt") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)


def test_csv_backend_joins_on_study_and_rejects_unknown_studies(tmp_path: Path) -> None:
    paths = dataset_paths(tmp_path)
    _sections_records(
        paths,
        [
            {"image_id": "d1", "patient_id": "10000001", "study_id": "s50000001"},
            {"image_id": "d2", "patient_id": "10000001", "study_id": "s50000001"},
            {"image_id": "d3", "patient_id": "10000001", "study_id": "s50000002"},
            {"image_id": "d4", "patient_id": "10000002", "study_id": "s59999999"},
        ],
    )
    csv_path = tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz"
    _write_chexpert_csv(csv_path)
    params = {"label": {"backend": "csv", "csv_path": str(csv_path), "csv_key": "study_id"}}
    stats = run_stage(paths, params, workers=1)

    assert (stats["in"], stats["out"], stats["rejected"]) == (4, 3, 1)
    out = read_parquet(paths.stage_dir("label") / "records.parquet").set_index("image_id")
    assert out.loc["d1", "Cardiomegaly"] == 1.0 and out.loc["d2", "Cardiomegaly"] == 1.0
    assert math.isnan(out.loc["d1", "Edema"])
    assert out.loc["d3", "Cardiomegaly"] == 0.0 and out.loc["d3", "Edema"] == -1.0
    assert (out["label_source"] == "csv").all()
    rejects = read_parquet(paths.stage_dir("label") / "rejects.parquet")
    assert rejects["id"].tolist() == ["d4"]
    assert "59999999" in rejects["reason"].iloc[0] and csv_path.name in rejects["reason"].iloc[0]
    written = json.loads((paths.stage_dir("label") / "stats.json").read_text())
    assert written["prevalence"]["Cardiomegaly"] == {
        "positive": 2,
        "negative": 1,
        "uncertain": 0,
        "blank": 0,
    }
    assert (paths.stage_dir("label") / "label_prevalence.png").read_bytes()[:4] == b"\x89PNG"


def test_csv_backend_names_missing_file_and_columns(tmp_path: Path) -> None:
    paths = dataset_paths(tmp_path)
    _sections_records(paths, [{"image_id": "d1", "patient_id": "1"}])
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        run_stage(paths, {"label": {"backend": "csv", "csv_path": str(missing)}}, workers=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("study_id,Cardiomegaly\n1,1.0\n")
    with pytest.raises(ValueError, match="bad.csv: missing column"):
        run_stage(paths, {"label": {"backend": "csv", "csv_path": str(bad)}}, workers=1)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    paths = dataset_paths(tmp_path)
    _sections_records(paths, [{"image_id": "d1", "patient_id": "1"}])
    with pytest.raises(ValueError, match="label.backend"):
        run_stage(paths, {"label": {"backend": "negbio"}}, workers=1)


@pytest.mark.parametrize(("backend", "pneumonia"), [("chexpert", 1.0), ("chexpert_plus", -1.0)])
def test_label_backend_param_selects_the_labeler_rules(
    tmp_path: Path, backend: str, pneumonia: float
) -> None:
    """``label.backend: chexpert_plus`` reaches the labeler: its extra uncertainty rule fires."""
    paths = dataset_paths(tmp_path)
    _sections_records(
        paths,
        [{"image_id": "d1", "patient_id": "p1", "text": "Clinical correlation for infection."}],
    )
    stats = run_stage(paths, {"label": {"backend": backend}}, workers=1)
    out = read_parquet(paths.stage_dir("label") / "records.parquet")
    assert stats["out"] == 1 and stats["backend"] == backend
    assert out.loc[0, "Pneumonia"] == pneumonia
    assert (out["label_source"] == backend).all()
