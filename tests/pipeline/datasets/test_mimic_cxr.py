"""MIMIC-CXR-JPG adapter on a miniature tree in the real layout, with real images and texts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.datasets import LayoutError, read_adapter
from pipeline.datasets.mimic_cxr import read_dataset
from tests.pipeline.datasets.trees import REPO, ingest, real_image, real_report, reject_map

# (dicom_id, subject_id, study_id, ViewPosition, split or None = absent from the split CSV)
ROWS = [
    ("a1", "10000032", "50414267", "PA", "train"),
    ("a2", "10000032", "50414267", "LATERAL", "train"),
    ("b1", "10000032", "53189527", "AP", "validate"),
    ("c1", "10000764", "57375967", "AP", "test"),  # report missing
    ("d1", "10000764", "50000001", "AP", "test"),  # image missing
    ("a1", "10000764", "50000001", "AP", "test"),  # duplicate dicom_id
    ("d2", "10000764", "50000001", "", None),  # no view, not in the split CSV
    ("e1", "11000001", "59999999", "PA", "test"),
]
IMAGES = {  # dicom_id → real demo image copied in as that MIMIC JPG
    "a1": "images/derived_jpeg/00002778_000_gray_q90.jpg",
    "a2": "images/derived_jpeg/00005618_000_gray_q95.jpg",
    "b1": "images/derived_jpeg/00026402_000_rgb_q85.jpg",
    "c1": "images/derived_jpeg/00002778_000_gray_q90.jpg",
    "d2": "images/derived_jpeg/00005618_000_gray_q95.jpg",
    "e1": "images/derived_jpeg/00026402_000_rgb_q85.jpg",
}
REPORTS = {  # study folder → real demo report bytes
    "p10/p10000032/s50414267": real_report("S023"),  # the MIMIC website example
    "p10/p10000032/s53189527": real_report("S014"),  # Windows-1252 bytes
    "p10/p10000764/s50000001": real_report("S022"),  # NegBio, CRLF
    "p11/p11000001/s59999999": real_report("S021"),  # CheXpert sample
}


def build_tree(raw: Path) -> Path:
    """MIMIC-CXR-JPG 2.x layout: gzip CSVs at the root, files/pXX/pNNN/sNNN/…"""
    raw.mkdir(parents=True)
    metadata = pd.DataFrame(
        [
            {
                "dicom_id": d,
                "subject_id": int(s),
                "study_id": int(t),
                "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                "ViewPosition": v,
                "Rows": 1024,
                "Columns": 1024,
                "StudyDate": 21800506,
            }
            for d, s, t, v, _ in ROWS
        ]
    )
    metadata.to_csv(raw / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    split = pd.DataFrame(
        [
            {"dicom_id": d, "study_id": int(t), "subject_id": int(s), "split": p}
            for d, s, t, _, p in ROWS
            if p is not None
        ]
    ).drop_duplicates("dicom_id")
    split.to_csv(raw / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    for dicom_id, subject, study, *_ in ROWS:
        if dicom_id in IMAGES and not (dicom_id == "a1" and subject == "10000764"):
            folder = raw / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            real_image(IMAGES[dicom_id], folder / f"{dicom_id}.jpg")
    for folder, data in REPORTS.items():
        (raw / "files" / f"{folder}.txt").write_bytes(data)
    return raw


def test_adapter_records_ids_paths_views_splits_and_report_rejects(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "mimic")
    result = read_dataset(raw, {})
    assert [
        (r["image_id"], r["patient_id"], r["study_id"], r["view"], r["official_split"])
        for r in result.records
    ] == [
        ("a1", "10000032", "s50414267", "PA", "train"),
        ("a2", "10000032", "s50414267", "LATERAL", "train"),
        ("b1", "10000032", "s53189527", "AP", "valid"),
        ("a1", "10000764", "s50000001", "AP", "train"),  # split CSV keyed by dicom_id
        ("d1", "10000764", "s50000001", "AP", "test"),
        ("d2", "10000764", "s50000001", "", ""),
        ("e1", "11000001", "s59999999", "PA", "test"),
    ]
    first = result.records[0]
    assert first["image_path"] == "files/p10/p10000032/s50414267/a1.jpg"
    assert first["report_text"] == real_report("S023").decode("utf-8")
    assert first["dataset"] == "mimic_cxr" and first["synthetic_report"] is False
    assert json.loads(first["extra_json"]) == {
        "Columns": "1024",
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "Rows": "1024",
        "StudyDate": "21800506",
        "report_file": "files/p10/p10000032/s50414267.txt",
        "study_id": "50414267",
        "subject_id": "10000032",
    }
    b1 = json.loads(result.records[2]["extra_json"])
    assert b1["report_encoding"] == "not valid UTF-8 at byte 141; decoded as Windows-1252"
    assert "3.1 × 2.4 cm" in result.records[2]["report_text"]
    assert json.loads(result.records[5]["extra_json"])["split_note"] == (
        "dicom_id not in mimic-cxr-2.0.0-split.csv.gz"
    )
    assert [(r.id, r.code, r.reason) for r in result.rejects] == [
        (
            "c1",
            "report_missing",
            f"{raw}/files/p10/p10000764/s57375967.txt: report file not found for study "
            "s57375967 (image c1)",
        )
    ]


def test_ingest_stage_rejects_duplicates_missing_images_and_views(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "mimic")
    stats, records, rejects = ingest(tmp_path, "mimic_cxr", raw, ["AP", "PA"])
    assert (stats["in"], stats["out"], stats["rejected"]) == (8, 3, 5)
    assert stats["reject_reasons"] == {
        "duplicate_image_id": 1,
        "image_missing": 1,
        "report_missing": 1,
        "view_filtered": 2,
    }
    assert records["image_id"].tolist() == ["a1", "b1", "e1"]
    assert records["official_split"].tolist() == ["train", "valid", "test"]
    assert reject_map(rejects) == {
        "a1": (
            "duplicate_image_id",
            "files/p10/p10000764/s50000001/a1.jpg: image id a1 already used by "
            "files/p10/p10000032/s50414267/a1.jpg",
        ),
        "a2": (
            "view_filtered",
            "files/p10/p10000032/s50414267/a2.jpg: view 'LATERAL' not in ingest.views ['AP', 'PA']",
        ),
        "c1": (
            "report_missing",
            f"{raw}/files/p10/p10000764/s57375967.txt: report file not found for study "
            "s57375967 (image c1)",
        ),
        "d1": (
            "image_missing",
            f"{raw}/files/p10/p10000764/s50000001/d1.jpg: image file not found",
        ),
        "d2": (
            "view_filtered",
            "files/p10/p10000764/s50000001/d2.jpg: view 'unknown' not in ingest.views ['AP', 'PA']",
        ),
    }


@pytest.mark.parametrize(
    "name", ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz"]
)
def test_missing_required_csv_names_the_file_and_the_layout(tmp_path: Path, name: str) -> None:
    raw = build_tree(tmp_path / "mimic")
    (raw / name).unlink()
    with pytest.raises(LayoutError) as error:
        read_adapter("mimic_cxr", raw, {})
    message = str(error.value)
    assert message.startswith(f"required file not found: {raw / name}\nexpected layout: ")
    assert "files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg" in message


def test_uncompressed_csvs_are_accepted_and_missing_columns_are_named(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "mimic")
    for name in ("metadata", "split"):
        gz = raw / f"mimic-cxr-2.0.0-{name}.csv.gz"
        pd.read_csv(gz).to_csv(raw / f"mimic-cxr-2.0.0-{name}.csv", index=False)
        gz.unlink()
    assert len(read_dataset(raw, {}).records) == 7
    plain = raw / "mimic-cxr-2.0.0-metadata.csv"
    pd.read_csv(plain).drop(columns=["ViewPosition"]).to_csv(plain, index=False)
    with pytest.raises(ValueError, match=r"metadata\.csv: missing column\(s\) \['ViewPosition'\]"):
        read_dataset(raw, {})


def test_cli_exits_2_and_names_the_missing_metadata_file(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "mimic")
    (raw / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            "--dataset",
            "mimic_mini",
            "--raw",
            str(raw),
            "--adapter",
            "mimic_cxr",
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(REPO / "params.yaml"),
        ],
    )
    assert result.exit_code == 2
    flat = "".join(result.output.split())  # rich may wrap long paths
    assert f"requiredfilenotfound:{raw}/mimic-cxr-2.0.0-metadata.csv.gz" in flat
    assert "expectedlayout:MIMIC-CXR-JPG2.x" in flat
    assert not (tmp_path / "out" / "interim" / "mimic_mini" / "ingest").exists()
