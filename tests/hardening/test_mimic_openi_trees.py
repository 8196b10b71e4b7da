"""MIMIC-CXR and Open-I trees with hostile ids, corrupt metadata tables and a leaking official
split: rejects name the value, table problems and leaks are exit code 2 with the file named.

The CLI runs in-process through its typer app here (same code as the console script, a
second faster than a subprocess each); the subprocess runs are in the sibling modules.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.label import read_label_csv
from tests.hardening.hostile import (
    IMAGES,
    MARKER,
    SAMPLE,
    copy_image,
    output_texts,
    plant_marker,
    rejects_by_id,
    write_params,
)

REPORT = (SAMPLE / "reports" / "S023.txt").read_bytes()
#: (dicom_id, subject_id, study_id, official split)
MIMIC_ROWS = [
    ("good1", "10000032", "50414267", "train"),
    ("../../../../outside/secret", "10000032", "50414267", "train"),
    ("sub/dir", "10000032", "50414267", "train"),
    ("unread1", "10000033", "50000002", "train"),  # report path is a folder
]
METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"


def mimic_tree(base: Path, rows: list[tuple[str, str, str, str]] = MIMIC_ROWS) -> Path:
    raw = base / "mimic"
    raw.mkdir(parents=True)
    plant_marker(base / "outside")
    frame = pd.DataFrame(
        [
            {"dicom_id": d, "subject_id": s, "study_id": t, "ViewPosition": "PA"}
            for d, s, t, _ in rows
        ]
    )
    frame.to_csv(raw / METADATA, index=False)
    split = pd.DataFrame([{"dicom_id": d, "split": p} for d, _, _, p in rows])
    split.to_csv(raw / SPLIT, index=False)
    for dicom_id, subject, study, _ in rows:
        folder = f"files/p{subject[:2]}/p{subject}/s{study}"
        if "/" not in dicom_id:
            copy_image(raw, f"{folder}/{dicom_id}.jpg", IMAGES[0])
        report = raw / f"{folder}.txt"
        if dicom_id.startswith("unread"):
            report.mkdir(parents=True, exist_ok=True)
        elif not report.exists():
            report.write_bytes(REPORT)
    return raw


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def _ingest(base: Path, raw: Path, adapter: str) -> tuple[int, str]:
    params = write_params(base / "params.yaml")
    return invoke(
        "ingest", "--dataset", adapter, "--adapter", adapter, "--raw", str(raw),
        "--out", str(base / "out"), "--params", str(params), "--workers", "1",
    )  # fmt: skip


def test_mimic_ids_with_separators_and_unreadable_reports_are_rejects(tmp_path: Path) -> None:
    raw = mimic_tree(tmp_path)
    code, message = _ingest(tmp_path, raw, "mimic_cxr")
    assert code == 0, message
    rejects = rejects_by_id(tmp_path / "out/interim/mimic_cxr/ingest")
    assert rejects["../../../../outside/secret"][0] == "path_outside_root"
    assert "dicom_id '../../../../outside/secret'" in rejects["../../../../outside/secret"][1]
    assert rejects["sub/dir"][0] == "path_outside_root"
    assert rejects["unread1"][0] == "unreadable_path"
    assert "s50000002.txt: cannot read: Is a directory" in rejects["unread1"][1]
    assert [p for p, data in output_texts(tmp_path / "out") if MARKER in data] == []


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _not_gzip(path: Path) -> None:
    path.write_bytes(b"dicom_id,subject_id\n" + bytes(range(256)) * 4)


def _gzip_of_binary(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n\xff\xfe" + os.urandom(64)))


def _missing_columns(path: Path) -> None:
    pd.DataFrame({"dicom_id": ["good1"], "subject": ["1"]}).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("damage", "table", "phrase"),
    [
        (_truncated, METADATA, "corrupt or truncated gzip data"),
        (_empty, METADATA, "the table is empty"),
        (_not_gzip, SPLIT, "corrupt or truncated gzip data"),
        (_gzip_of_binary, SPLIT, "not a UTF-8 CSV"),
        (
            _missing_columns,
            METADATA,
            "missing column(s) ['subject_id', 'study_id', 'ViewPosition']",
        ),
    ],
)
def test_corrupt_metadata_table_is_exit_2_naming_the_file(
    tmp_path: Path, damage, table: str, phrase: str
) -> None:
    rows = [(f"x{i:03d}", "10000032", "50414267", "train") for i in range(3)]
    raw = mimic_tree(tmp_path, rows)
    damage(raw / table)
    code, message = _ingest(tmp_path, raw, "mimic_cxr")
    assert code == 2
    assert "".join(f"{raw / table}: {phrase}".split()) in "".join(message.split())


def test_patient_in_two_official_splits_is_a_clear_message(tmp_path: Path) -> None:
    rows = [
        ("good1", "10000032", "50414267", "train"),
        ("good2", "10000032", "50414268", "test"),
    ]
    raw = mimic_tree(tmp_path, rows)
    code, message = _ingest(tmp_path, raw, "mimic_cxr")
    assert code == 0, message
    # the split stage reads the label table; the labels themselves play no part in the check,
    # so the ingest table stands in for it (the chexpert labeler would cost seconds here)
    interim = tmp_path / "out/interim/mimic_cxr"
    (interim / "label").mkdir()
    shutil.copy(interim / "ingest/records.parquet", interim / "label/records.parquet")
    code, message = invoke(
        "split", "--dataset", "mimic_cxr", "--adapter", "mimic_cxr", "--raw", str(raw),
        "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml"),
    )  # fmt: skip
    assert code == 2
    assert "1 patient(s) appear in more than one split (e.g. 10000032)" in message


def test_openi_hostile_image_ids_and_xml_paths(tmp_path: Path) -> None:
    raw = tmp_path / "openi"
    reports = raw / "ecgen-radiology"
    reports.mkdir(parents=True)
    secret_report, _ = plant_marker(tmp_path / "outside")
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><eCitation><MedlineCitation><Article><Abstract>'
        '<AbstractText Label="FINDINGS">Lungs are clear.</AbstractText></Abstract></Article>'
        '</MedlineCitation><parentImage id="{}"><caption>PA</caption></parentImage></eCitation>'
    )
    (reports / "1.xml").write_text(xml.format("CXR1_1_IM-0001-3001"))
    copy_image(raw, "NLMCXR_png/CXR1_1_IM-0001-3001.png", IMAGES[0])
    (reports / "2.xml").write_text(xml.format("../../outside/secret"))
    (reports / "3.xml").mkdir()  # a folder where a report file is expected
    (reports / "4.xml").symlink_to(secret_report)
    code, message = _ingest(tmp_path, raw, "openi")
    assert code == 0, message
    rejects = rejects_by_id(tmp_path / "out/interim/openi/ingest")
    assert rejects["2"][0] == "path_outside_root" and "'../../outside/secret'" in rejects["2"][1]
    assert rejects["3"][0] == "unreadable_path" and "Is a directory" in rejects["3"][1]
    assert rejects["4"][0] == "path_outside_root" and "4.xml" in rejects["4"][1]
    assert [p for p, data in output_texts(tmp_path / "out") if MARKER in data] == []


def test_corrupt_label_csv_names_the_file(tmp_path: Path) -> None:
    """The csv label backend's table (e.g. mimic-cxr-2.0.0-chexpert.csv.gz) gets the same check."""
    path = tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz"
    path.write_bytes(gzip.compress(b"subject_id,study_id,Edema\n" * 200)[:60])
    with pytest.raises(ValueError, match="corrupt or truncated gzip data") as caught:
        read_label_csv(path, "study_id")
    assert str(path) in str(caught.value)
