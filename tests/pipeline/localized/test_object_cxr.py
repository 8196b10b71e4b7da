"""Object-CXR adapter on a miniature release tree: rectangles, ellipses and polygons in the
challenge's ANNOTATION format, train and dev splits, JPEG images from the demo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.datasets import read_adapter
from pipeline.datasets.common import LayoutError
from pipeline.localized.rle import decode_counts
from pipeline.params import load_params
from pipeline.splits import TRAIN_OR_VALID, assign_split, train_or_valid_ratios, validate_ratios
from tests.pipeline.localized.run import REPO, codes, prepare, splits_of

JPEG = REPO / "data" / "sample" / "images" / "derived_jpeg" / "00005618_000_gray_q95.jpg"


def _tree(raw: Path) -> Path:
    for folder, name in (("train", "00001.jpg"), ("train", "00002.jpg"), ("dev", "08001.jpg")):
        (raw / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(JPEG, raw / folder / name)
    (raw / "train.csv").write_text(
        "image_name,annotation\n"
        "00001.jpg,0 100 200 300 400;1 500 500 700 600;2 200 600 400 600 300 800\n"
        "00002.jpg,\n"
        "../../x.jpg,0 1 1 5 5\n"
    )
    (raw / "dev.csv").write_text(
        "image_name,annotation\n08001.jpg,3 1 2 3 4;2 1 1 5 5;0 10 10 a 40\n"
    )
    return raw


def test_release_rows_become_records_shapes_and_rejects(tmp_path: Path) -> None:
    raw = _tree(tmp_path / "raw")
    result = read_adapter("object_cxr", raw, {})
    records = {r["image_id"]: r for r in result.records}
    assert sorted(records) == ["00001", "00002", "08001"]
    assert [records[i]["official_split"] for i in ("00001", "00002", "08001")] == [
        TRAIN_OR_VALID,
        TRAIN_OR_VALID,
        "test",
    ]
    assert records["08001"]["image_path"] == "dev/08001.jpg" and records["00002"]["view"] == ""
    assert [(r.id, r.code) for r in result.rejects] == [("../../x.jpg", "path_outside_root")]
    shapes = [(a["annotation_id"], a["shape"]) for a in result.annotations]
    assert shapes[:3] == [("00001#0", "box"), ("00001#1", "ellipse"), ("00001#2", "polygon")]

    out = prepare(tmp_path, "object_cxr", raw)
    assert out["ingest"]["stats"]["out"] == 3  # no view, yet not filtered: localized dataset
    # dev is the held-out test set; train is divided by patient (= image) hash
    split = load_params(REPO / "params.yaml")["split"]
    part = train_or_valid_ratios(validate_ratios(split["ratios"]))
    assert splits_of(out) == {
        "00001": assign_split(split["seed"], "00001", part),
        "00002": assign_split(split["seed"], "00002", part),
        "08001": "test",
    }
    assert out["split"]["stats"]["source"] == "official"
    localized = out["localized"]
    assert codes(localized["rejects"]) == {
        "08001#0": "bad_annotation",
        "08001#1": "bad_annotation",
        "08001#2": "bad_annotation",
    }
    reasons = dict(zip(localized["rejects"]["id"], localized["rejects"]["reason"], strict=True))
    assert reasons["08001#0"] == "dev.csv:2: object '3 1 2 3 4': shape code '3' is not 0, 1 or 2"
    assert "a polygon takes an even number ≥ 6 of coordinates, got 4" in reasons["08001#1"]
    kept = localized["records"].set_index("annotation_id")
    image = out["images"]["records"].set_index("image_id").loc["00001"]
    sx = image["content_width"] / (image["crop_right"] - image["crop_left"])
    sy = image["content_height"] / (image["crop_bottom"] - image["crop_top"])

    def on_output(x: float, y: float) -> tuple[float, float]:
        return (
            image["pad_left"] + (x - image["crop_left"]) * sx,
            image["pad_top"] + (y - image["crop_top"]) * sy,
        )

    box = kept.loc["00001#0"]
    expected = (*on_output(100, 200), *on_output(300, 400))
    got = (box["x_min"], box["y_min"], box["x_max"], box["y_max"])
    assert all(abs(a - b) < 1e-9 for a, b in zip(got, expected, strict=True)), (got, expected)
    assert box["mask_rle"] == "" and box["mask_pixels"] == 0
    ellipse = decode_counts(kept.loc["00001#1", "mask_rle"], 512, 512)
    area = 3.14159 * (200 * sx / 2) * (100 * sy / 2)  # 200 × 100 source box
    assert abs(ellipse.sum() - area) < 0.03 * area
    polygon = kept.loc["00001#2"]
    assert polygon["x_min"] == on_output(200, 0)[0]
    # the demo film's crop ends above y = 800: the polygon is cut at the content's bottom edge
    assert image["crop_bottom"] < 800
    assert polygon["clipped"] and polygon["y_max"] == image["pad_top"] + image["content_height"]
    assert polygon["mask_pixels"] > 0


def test_missing_train_csv_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(LayoutError, match="train.csv"):
        read_adapter("object_cxr", tmp_path / "raw", {})
