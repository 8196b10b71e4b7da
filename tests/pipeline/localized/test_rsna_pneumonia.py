"""RSNA Pneumonia Detection adapter on a miniature release tree (real demo pixels as DICOMs),
and the geometry check: a known box lands where the images stage's geometry columns say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.datasets import read_adapter
from pipeline.datasets.common import LayoutError
from pipeline.params import load_params
from pipeline.splits import assign_split
from tests.pipeline.localized.builders import demo_pixels, framed_target, write_dicom
from tests.pipeline.localized.run import REPO, codes, prepare, splits_of

pytest.importorskip("pydicom")

HEADER = "patientId,x,y,width,height,Target\n"


def _tree(raw: Path, rows: str, images: dict[str, tuple[str, str]]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "stage_2_train_labels.csv").write_text(HEADER + rows)
    for patient, (view, patient_tag) in images.items():
        write_dicom(
            raw / "stage_2_train_images" / f"{patient}.dcm", demo_pixels(128), view, patient_tag
        )
    return raw


def test_release_rows_become_records_boxes_and_rejects(tmp_path: Path) -> None:
    raw = _tree(
        tmp_path / "raw",
        "pa,10,20,30,40,1\n"
        "pa,60,50,20,25,1\n"
        "pa,500,500,20,20,1\n"  # beyond the 128² image
        "pb,,,,,0\n"
        "pc,abc,5,5,5,1\n"
        "pd,1,1,5,5,1\n"  # no DICOM
        "../evil,1,1,5,5,1\n",
        {"pa": ("AP", "anon-a"), "pb": ("PA", ""), "pc": ("PA", "anon-c")},
    )
    result = read_adapter("rsna_pneumonia", raw, {})
    records = {r["image_id"]: r for r in result.records}
    assert sorted(records) == ["pa", "pb", "pc", "pd"]
    assert (records["pa"]["view"], records["pa"]["patient_id"]) == ("AP", "anon-a")
    assert records["pb"]["patient_id"] == "pb"  # no PatientID in the header
    assert records["pa"]["image_path"] == "stage_2_train_images/pa.dcm"
    assert records["pb"]["extra_json"] == '{"boxes":0,"target":0}'
    assert [(r.id, r.code) for r in result.rejects] == [("../evil", "path_outside_root")]
    first = result.annotations[0]
    assert (first["annotation_id"], first["shape"], first["coords"]) == (
        "pa#0",
        "box",
        "[10.0, 20.0, 40.0, 60.0]",
    )
    assert first["source"] == "stage_2_train_labels.csv:2"

    out = prepare(tmp_path, "rsna_pneumonia", raw)
    assert codes(out["ingest"]["rejects"]) == {
        "../evil": "path_outside_root",
        "pd": "image_missing",
    }
    localized = out["localized"]
    assert codes(localized["rejects"]) == {
        "pa#2": "box_outside_image",
        "pc#0": "bad_annotation",
        "pd#0": "no_image",
    }
    reasons = dict(zip(localized["rejects"]["id"], localized["rejects"]["reason"], strict=True))
    assert reasons["pc#0"] == "stage_2_train_labels.csv:6: x 'abc' is not a number"
    assert list(localized["records"]["annotation_id"]) == ["pa#0", "pa#1"]
    # stage 2 labels only (no released test labels): patient-level hash split
    split = load_params(REPO / "params.yaml")["split"]
    assert splits_of(out) == {
        image: assign_split(split["seed"], patient, split["ratios"])
        for image, patient in (("pa", "anon-a"), ("pb", "pb"), ("pc", "anon-c"))
    }
    assert out["split"]["stats"]["in"] == out["split"]["stats"]["out"] == 3
    stats = localized["stats"]
    assert stats["in"] == 5 == stats["out"] + stats["rejected"] and stats["reconciled"]
    assert stats["findings"] == {"Lung Opacity": 2}


def test_missing_labels_csv_is_a_layout_error_and_exit_2(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "stage_2_train_images").mkdir(parents=True)
    with pytest.raises(LayoutError, match="stage_2_train_labels.csv"):
        read_adapter("rsna_pneumonia", raw, {})
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            "--dataset",
            "r",
            "--adapter",
            "rsna_pneumonia",
            "--raw",
            str(raw),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2
    assert "stage_2_train_labels.csv" in result.output


def test_a_known_box_lands_where_the_geometry_columns_say(tmp_path: Path) -> None:
    """Generated film: 200 × 150 content framed by black margins (30, 20, 10, 40), a bright
    40 × 40 target at content (60, 40) → source box (90, 60, 130, 100)."""
    margins = (30, 20, 10, 40)
    pixels = framed_target((200, 150), margins, (60, 40, 100, 80))
    raw = tmp_path / "raw"
    (raw / "stage_2_train_images").mkdir(parents=True)
    write_dicom(raw / "stage_2_train_images" / "film.dcm", pixels, "PA", "p")
    (raw / "stage_2_train_labels.csv").write_text(HEADER + "film,90,60,40,40,1\n")
    out = prepare(tmp_path, "rsna_pneumonia", raw)

    image = out["images"]["records"].iloc[0]
    crop = [int(image[c]) for c in ("crop_left", "crop_top", "crop_right", "crop_bottom")]
    assert all(abs(a - b) <= 2 for a, b in zip(crop, [30, 20, 230, 170], strict=True)), crop
    sx = image["content_width"] / (image["crop_right"] - image["crop_left"])
    sy = image["content_height"] / (image["crop_bottom"] - image["crop_top"])
    expected = (
        image["pad_left"] + (90 - image["crop_left"]) * sx,
        image["pad_top"] + (60 - image["crop_top"]) * sy,
        image["pad_left"] + (130 - image["crop_left"]) * sx,
        image["pad_top"] + (100 - image["crop_top"]) * sy,
    )
    box = out["localized"]["records"].iloc[0]
    got = (box["x_min"], box["y_min"], box["x_max"], box["y_max"])
    assert np.allclose(got, expected, atol=1e-9), (got, expected)
    assert not box["clipped"] and box["image_file"] == image["image_file"]
    # 200 wide content → 512: scale 2.56, so the 40 px target is ≈ 102 px wide on the output
    assert abs((got[2] - got[0]) - 40 * 512 / (crop[2] - crop[0])) < 1e-6
    with Image.open(out["interim"] / "images" / image["image_file"]) as written:
        output = np.asarray(written.convert("L")).astype(float)
    x0, y0, x1, y1 = (round(v) for v in got)
    assert output[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].mean() > 215  # the target is inside
    ring = np.ones_like(output, dtype=bool)
    ring[y0 - 4 : y1 + 4, x0 - 4 : x1 + 4] = False
    ring[: y0 - 12] = ring[y1 + 12 :] = False
    ring[:, : x0 - 12] = ring[:, x1 + 12 :] = False
    assert output[ring].mean() < 180  # and nothing bright just outside the box
    # the montage (DVC plot) draws the box where the table says: 256² tile, 6 px gap, 16 px label
    with Image.open(out["interim"] / "localized" / "annotations_montage.png") as montage:
        sheet = np.asarray(montage.convert("RGB"))
    assert sheet.shape == (6 + 16 + 256 + 6, 6 + 256 + 6, 3)
    middle = round(6 + 16 + (got[1] + got[3]) / 4)
    yellow = np.flatnonzero((sheet[middle] == (255, 210, 0)).all(axis=1))
    assert (
        abs(yellow.min() - (6 + got[0] / 2)) <= 1.5 and abs(yellow.max() - (6 + got[2] / 2)) <= 1.5
    )
