"""The embedded demo dataset and its adapter: composition, provenance, ingest and bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.datasets import LayoutError, read_adapter
from pipeline.datasets.sample import read_dataset
from pipeline.splits import assign_split
from tests.pipeline.datasets.trees import REPO, SAMPLE, ingest, reject_map

#: Folder of the original source files the demo is built from (not part of the repository).
SOURCES_ENV = "MEDVILL_SAMPLE_SOURCES"
BUILD_SCRIPT = REPO / "scripts" / "build_sample.py"
DUPLICATE_DICOM = "dicom_1-2-276-0-7230010-3-1-4-8323329-6904-1517875201-850819"
TWO_STUDY_PATIENTS = {"P001", "P002", "P003", "P004", "P005", "P014", "P015", "P016"}


def manifest_rows() -> list[dict[str, str]]:
    with (SAMPLE / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_manifest_references_exactly_the_files_on_disk_and_fits_the_size_budget() -> None:
    rows = manifest_rows()
    referenced = {row["image"] for row in rows} | {row["report"] for row in rows}
    on_disk = {
        p.relative_to(SAMPLE).as_posix()
        for sub in ("images", "reports")
        for p in (SAMPLE / sub).rglob("*")
        if p.is_file()
    }
    assert referenced == on_disk
    assert len(rows) == 40 and len({row["report"] for row in rows}) == 25
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert 9_000_000 < total < 12_000_000


def test_every_source_file_and_licence_is_attributed() -> None:
    sources = (SAMPLE / "SOURCES.md").read_text(encoding="utf-8")
    for row in manifest_rows():
        assert Path(row["image"]).name in sources, row["image"]
    for needle in (
        "https://nihcc.app.box.com/v/ChestXray-NIHCC",
        "CVPR 2017",
        "NIH Clinical Center",
        "10.6084/m9.figshare.12275009",
        "CC BY 3.0",
        "ad7ab099",
        "PUBLIC DOMAIN",
        "Peng",
        "MIT",
    ):
        assert needle in sources, needle
    mit = (SAMPLE / "LICENSES" / "chexpert-labeler-MIT.txt").read_text(encoding="utf-8")
    assert "Copyright (c) 2018 Stanford Machine Learning Group" in mit
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme and "S001" in readme


def test_adapter_reads_every_manifest_row() -> None:
    result = read_dataset(SAMPLE, {})
    assert result.rejects == []
    records = {(r["image_id"], r["image_path"]): r for r in result.records}
    assert len(records) == 40
    # DICOM rows have no view in the manifest: it comes from the header (all three say PA).
    dicoms = [r for r in result.records if r["image_path"].endswith(".dcm")]
    assert [(r["view"], json.loads(r["extra_json"])["view_source"]) for r in dicoms] == [
        ("PA", "dicom_header")
    ] * 3
    # Study S014 is stored in Windows-1252; the text is decoded and the record notes it.
    s014 = next(r for r in result.records if r["study_id"] == "S014")
    assert "3.1 × 2.4 cm" in s014["report_text"]
    assert json.loads(s014["extra_json"])["report_encoding"] == (
        "not valid UTF-8 at byte 141; decoded as Windows-1252"
    )
    # Real texts stay byte-faithful: NegBio's CRLF line ends, MIMIC's leading spaces.
    s022 = next(r for r in result.records if r["study_id"] == "S022")
    assert s022["report_text"].startswith("findings: pa and lat cxr at 7:34 p.m..")
    assert s022["report_text"].count("\r\n") == 4
    s023 = next(r for r in result.records if r["study_id"] == "S023")
    assert "\n IMPRESSION: \n \n Large left pleural effusion\n" in s023["report_text"]


def test_demo_ingest_counts_patients_studies_and_synthetic_flags(tmp_path: Path) -> None:
    stats, records, rejects = ingest(tmp_path, "sample", SAMPLE, ["AP", "PA"])
    assert (stats["in"], stats["out"], stats["rejected"]) == (40, 39, 1)
    assert stats["reject_reasons"] == {"duplicate_image_id": 1}
    # The header-edited copy of the SIIM DICOM shares its SOPInstanceUID: a real duplicate.
    assert reject_map(rejects) == {
        DUPLICATE_DICOM: (
            "duplicate_image_id",
            f"images/dicom/xrv_fake_monochrome1.dcm: image id {DUPLICATE_DICOM} already used "
            "by images/dicom/siim_nih_cr_pa_monochrome2.dcm",
        )
    }
    assert records["image_id"].is_unique
    assert records["patient_id"].nunique() == 17
    assert records["study_id"].nunique() == 25
    studies_per_patient = records.groupby("patient_id")["study_id"].nunique()
    assert set(studies_per_patient[studies_per_patient == 2].index) == TWO_STUDY_PATIENTS
    images_per_study = records.groupby("study_id")["image_id"].count()
    assert images_per_study.max() == 4 and (images_per_study > 1).sum() == 10
    assert records.groupby("study_id")["report_text"].nunique().eq(1).all()
    assert records["report_text"].nunique() == 25
    assert records["view"].value_counts().to_dict() == {"PA": 22, "AP": 17}
    assert set(records["official_split"]) == {""}
    # Synthetic reports are exactly the NIH images' (PNG and derived JPEG); the rest are real.
    sources = records["extra_json"].map(lambda e: json.loads(e)["source"])
    synthetic = records["synthetic_report"]
    assert stats["synthetic_reports"] == int(synthetic.sum()) == 21
    assert set(sources[synthetic]) == {"nih_chestxray14", "nih_chestxray14_derived_jpeg"}
    assert set(sources[~synthetic]) == {"mhh_covid19", "siim_acr_nih_dicom", "nema_wg04_dicom"}
    # Patient-level hashed split (params seed 123, 80/10/10) gives all three splits.
    splits = {
        p: assign_split(123, p, {"train": 0.8, "valid": 0.1, "test": 0.1})
        for p in records["patient_id"].unique()
    }
    assert set(splits.values()) == {"train", "valid", "test"}


def test_view_filter_with_medvill_ap_only_setting(tmp_path: Path) -> None:
    stats, records, rejects = ingest(tmp_path, "sample", SAMPLE, ["AP"])
    assert (stats["in"], stats["out"], stats["rejected"]) == (40, 17, 23)
    assert stats["reject_reasons"] == {"duplicate_image_id": 1, "view_filtered": 22}
    assert set(records["view"]) == {"AP"}
    nema = "dicom_1-3-6-1-4-1-5962-1-1-9-1-3-20040826185059-5457"
    assert reject_map(rejects.drop_duplicates("id"))[nema] == (
        "view_filtered",
        "images/dicom/nema_wg04_RG1_J2KI_cr_chest_monochrome1.dcm: view 'PA' not in "
        "ingest.views ['AP']",
    )


def copy_sample(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLE, raw)
    return raw


def test_missing_report_and_bad_row_are_rejected_and_counts_reconcile(tmp_path: Path) -> None:
    raw = copy_sample(tmp_path)
    (raw / "reports" / "S025.txt").unlink()
    rows = manifest_rows()
    for row in rows:
        if row["image_id"] == "nih_00024291_000":
            row["synthetic"] = "maybe"
    with (raw / "manifest.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    stats, records, rejects = ingest(tmp_path, "sample", raw, ["AP", "PA"])
    assert (stats["in"], stats["out"], stats["rejected"]) == (40, 36, 4)
    assert not {"mhh_00870a9c", "mhh_86d19bba", "nih_00024291_000"} & set(records["image_id"])
    assert stats["reject_reasons"] == {
        "bad_manifest_row": 1,
        "duplicate_image_id": 1,
        "report_missing": 2,
    }
    found = reject_map(rejects)
    assert found["mhh_00870a9c"] == (
        "report_missing",
        f"{raw}/reports/S025.txt: report file not found (study S025, {raw}/manifest.csv line 40)",
    )
    assert found["mhh_86d19bba"][0] == "report_missing"
    code, reason = found["nih_00024291_000"]
    assert code == "bad_manifest_row"
    assert f"{raw}/manifest.csv line 18" in reason and "synthetic='maybe'" in reason


def test_missing_manifest_is_a_layout_error_naming_the_file(tmp_path: Path) -> None:
    raw = copy_sample(tmp_path)
    (raw / "manifest.csv").unlink()
    with pytest.raises(LayoutError) as error:
        read_adapter("sample", raw, {})
    message = str(error.value)
    assert f"required file not found: {raw}/manifest.csv" in message
    assert "expected layout: <root>/manifest.csv (columns image_id" in message


def test_manifest_without_a_required_column_names_file_and_column(tmp_path: Path) -> None:
    raw = copy_sample(tmp_path)
    text = (raw / "manifest.csv").read_text(encoding="utf-8")
    (raw / "manifest.csv").write_text(text.replace(",synthetic,", ",is_synthetic,", 1))
    with pytest.raises(ValueError, match=r"manifest\.csv: missing column\(s\) \['synthetic'\]"):
        read_dataset(raw, {})


@pytest.mark.skipif(
    not os.environ.get(SOURCES_ENV),
    reason=f"{SOURCES_ENV} is not set: it names the folder of original source files "
    "(SOURCES.md, images/, reports/) that scripts/build_sample.py rebuilds data/sample from",
)
def test_build_script_reproduces_the_committed_demo() -> None:
    sources = Path(os.environ[SOURCES_ENV])
    assert (sources / "SOURCES.md").is_file(), f"{SOURCES_ENV}={sources} has no SOURCES.md"
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check", "--sources", str(sources)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_build_script_without_sources_names_the_option_and_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != SOURCES_ENV}
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert f"--sources is required (or set {SOURCES_ENV})" in result.stderr
