"""SIIM-ACR Pneumothorax adapter on a miniature release tree (nested DICOM folders, the
release's `` EncodedPixels`` header), and masks through crop → resize → pad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import read_adapter
from pipeline.datasets.common import LayoutError
from pipeline.localized.rle import decode_counts, encode_siim
from pipeline.params import load_params
from pipeline.splits import assign_split
from tests.pipeline.localized.builders import demo_pixels, framed_target, write_dicom
from tests.pipeline.localized.run import REPO, codes, prepare, splits_of

pytest.importorskip("pydicom")

HEADER = "ImageId, EncodedPixels\n"  # the release's header has the leading space


def _dicom(raw: Path, image_id: str, pixels: np.ndarray, patient: str = "") -> None:
    folder = raw / "dicom-images-train" / f"1.2.{image_id}.study" / f"1.2.{image_id}.series"
    write_dicom(folder / f"{image_id}.dcm", pixels, "PA", patient, uid=f"1.2.{len(image_id)}")


def test_release_rows_become_records_masks_and_rejects(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    pixels = demo_pixels(64)
    region = np.zeros((64, 64), dtype=bool)
    region[10:30, 40:50] = True
    for image_id, patient in (("1.1", "pat-1"), ("1.2", "pat-1"), ("1.3", "")):
        _dicom(raw, image_id, pixels, patient)
    (raw / "train-rle.csv").write_text(
        HEADER
        + f"1.1,{encode_siim(region)}\n"
        + "1.1,5000 3\n"  # past the 64 × 64 grid
        + "1.2,-1\n"
        + "1.3, 1 2 3\n"  # odd number of values
        + "9.9,-1\n"  # no DICOM anywhere
    )
    result = read_adapter("siim_pneumothorax", raw, {})
    records = {r["image_id"]: r for r in result.records}
    assert sorted(records) == ["1.1", "1.2", "1.3"]
    assert records["1.1"]["patient_id"] == "pat-1" and records["1.3"]["patient_id"] == "1.3"
    assert records["1.1"]["image_path"] == (
        "dicom-images-train/1.2.1.1.study/1.2.1.1.series/1.1.dcm"
    )
    assert records["1.2"]["extra_json"] == '{"pneumothorax":0,"regions":0}'
    assert [(r.id, r.code) for r in result.rejects] == [("9.9", "image_missing")]
    assert [(a["annotation_id"], a["rle_width"]) for a in result.annotations] == [
        ("1.1#0", 64),
        ("1.1#1", 64),
        ("1.3#0", 64),
    ]

    out = prepare(tmp_path, "siim_pneumothorax", raw)
    localized = out["localized"]
    assert codes(localized["rejects"]) == {"1.1#1": "bad_rle", "1.3#0": "bad_rle"}
    reasons = dict(zip(localized["rejects"]["id"], localized["rejects"]["reason"], strict=True))
    assert reasons["1.1#1"].startswith("train-rle.csv:3: SIIM EncodedPixels: run ends at pixel")
    (row,) = localized["records"].itertuples()
    assert (row.annotation_id, row.shape, row.finding) == ("1.1#0", "siim_rle", "Pneumothorax")
    assert row.mask_pixels > 0 and row.x_max > row.x_min
    stats = localized["stats"]
    assert (stats["in"], stats["out"], stats["rejected"], stats["masks"]) == (3, 1, 2, 1)
    # no official split: patients by hash, both films of pat-1 in the same split
    split = load_params(REPO / "params.yaml")["split"]
    pat1 = assign_split(split["seed"], "pat-1", split["ratios"])
    assert splits_of(out) == {
        "1.1": pat1, "1.2": pat1, "1.3": assign_split(split["seed"], "1.3", split["ratios"]),
    }  # fmt: skip
    assert sorted(out["patients"]["patient_id"]) == ["1.3", "pat-1"]


def test_without_the_image_folder_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train-rle.csv").write_text(HEADER)
    with pytest.raises(LayoutError, match="dicom-images-train"):
        read_adapter("siim_pneumothorax", tmp_path / "raw", {})


def test_a_known_mask_lands_on_its_pixels_of_the_output_image(tmp_path: Path) -> None:
    """The bright 40 × 30 target of a film with black margins is the mask; on the output
    image, the mask and the bright pixels must coincide."""
    margins, target = (24, 16, 8, 32), (70, 50, 110, 80)
    pixels = framed_target((180, 160), margins, target, seed=4)
    source_mask = np.zeros(pixels.shape, dtype=bool)
    source_mask[16 + 50 : 16 + 80, 24 + 70 : 24 + 110] = True
    raw = tmp_path / "raw"
    _dicom(raw, "7.7", pixels, "p")
    edge = np.zeros(pixels.shape, dtype=bool)
    edge[100:110, 0:40] = True  # 24 of its 40 columns lie in the black left margin
    (raw / "train-rle.csv").write_text(
        HEADER + f"7.7,{encode_siim(source_mask)}\n7.7,{encode_siim(edge)}\n"
    )
    out = prepare(tmp_path, "siim_pneumothorax", raw)

    row, edge_row = out["localized"]["records"].itertuples()
    assert not row.clipped and edge_row.clipped
    assert edge_row.x_min == out["images"]["records"].iloc[0]["pad_left"]
    mask = decode_counts(row.mask_rle, 512, 512)
    assert mask.sum() == row.mask_pixels
    image = out["images"]["records"].iloc[0]
    with Image.open(out["interim"] / "images" / image["image_file"]) as written:
        bright = np.asarray(written.convert("L")) > 200
    overlap = (mask & bright).sum() / (mask | bright).sum()
    assert overlap > 0.9, overlap
    sx = image["content_width"] / (image["crop_right"] - image["crop_left"])
    expected_x0 = image["pad_left"] + (24 + 70 - image["crop_left"]) * sx
    assert abs(row.x_min - expected_x0) <= 1.0


def test_a_dicom_symlinked_from_outside_the_root_is_rejected(tmp_path: Path) -> None:
    outside = write_dicom(tmp_path / "elsewhere" / "x.dcm", demo_pixels(64), "PA", "p")
    raw = tmp_path / "raw"
    _dicom(raw, "2.1", demo_pixels(64), "p")
    link = raw / "dicom-images-train" / "s" / "r" / "2.2.dcm"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    (raw / "train-rle.csv").write_text(HEADER + "2.1,-1\n2.2,0 5\n")
    out = prepare(tmp_path, "siim_pneumothorax", raw)
    assert codes(out["ingest"]["rejects"]) == {"2.2": "path_outside_root"}
    assert codes(out["localized"]["rejects"]) == {"2.2#0": "no_image"}
    assert list(out["images"]["records"]["image_id"]) == ["2.1"]
