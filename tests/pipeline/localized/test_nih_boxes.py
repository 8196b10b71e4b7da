"""NIH ChestX-ray14 box list adapter on a miniature release tree (real demo PNGs, the
release's split ``Bbox [x,y,w,h]`` header)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.datasets import read_adapter
from pipeline.datasets.common import LayoutError
from pipeline.params import load_params
from pipeline.splits import TRAIN_OR_VALID, assign_split, train_or_valid_ratios, validate_ratios
from tests.pipeline.localized.run import REPO, codes, prepare, splits_of

NIH = REPO / "data" / "sample" / "images" / "nih_chestxray14"
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
)


def _tree(raw: Path) -> Path:
    (raw / "images").mkdir(parents=True)
    for name in ("00000924_000.png", "00002778_000.png", "00005618_000.png"):
        shutil.copyfile(NIH / name, raw / "images" / name)
    shutil.copyfile(NIH / "00005618_000.png", raw / "images" / "stray.png")
    (raw / "BBox_List_2017.csv").write_text(
        BBOX_HEADER
        + "00000924_000.png,Atelectasis,225.08,547.01,86.77,79.18,,,\n"
        + "00000924_000.png,Infiltrate,600,300,120.5,200,,,\n"
        + "00002778_000.png,Mass,1000,1000,100,100,,,\n"  # reaches past the 1024² film
        + "00002778_000.png,Nodule,12,x,10,10,,,\n"
        + "99999999_000.png,Nodule,10,10,10,10,,,\n"  # not in Data_Entry_2017.csv
    )
    (raw / "Data_Entry_2017.csv").write_text(
        ENTRY_HEADER
        + "00000924_000.png,Atelectasis|Infiltration,0,924,58,M,PA,2500,2048,0.168,0.168,\n"
        + "00002778_000.png,Mass|Nodule,0,2778,41,F,AP,2500,2048,0.168,0.168,\n"
        + "00005618_000.png,No Finding,0,5618,30,F,PA,2500,2048,0.168,0.168,\n"
    )
    return raw


def test_release_rows_become_records_boxes_and_rejects(tmp_path: Path) -> None:
    raw = _tree(tmp_path / "raw")
    result = read_adapter("nih_boxes", raw, {})
    records = {r["image_id"]: r for r in result.records}
    assert sorted(records) == ["00000924_000", "00002778_000"]  # boxed images only
    assert (records["00002778_000"]["patient_id"], records["00002778_000"]["view"]) == (
        "2778",
        "AP",
    )
    assert records["00000924_000"]["image_path"] == "images/00000924_000.png"
    first = result.annotations[0]
    assert (first["finding"], first["coords"]) == (
        "Atelectasis",
        "[225.08, 547.01, 311.85, 626.19]",
    )

    out = prepare(tmp_path, "nih_boxes", raw)
    # 00005618_000.png has no box but the data entry table names it; stray.png nothing does
    assert out["ingest"]["stats"]["unlisted_examples"] == ["images/stray.png"]
    localized = out["localized"]
    assert codes(localized["rejects"]) == {
        "00002778_000#1": "bad_annotation",
        "99999999_000#0": "unknown_image",
    }
    kept = localized["records"].set_index("annotation_id")
    assert list(kept.index) == ["00000924_000#0", "00000924_000#1", "00002778_000#0"]
    assert bool(kept.loc["00002778_000#0", "clipped"])  # cut at the film edge
    assert not bool(kept.loc["00000924_000#0", "clipped"])
    assert kept.loc["00002778_000#0", "x_max"] <= 512.0
    assert localized["stats"]["findings"] == {"Atelectasis": 1, "Infiltrate": 1, "Mass": 1}
    # no official lists in this tree: each patient by hash
    split = load_params(REPO / "params.yaml")["split"]
    assert splits_of(out) == {
        "00000924_000": assign_split(split["seed"], "924", split["ratios"]),
        "00002778_000": assign_split(split["seed"], "2778", split["ratios"]),
    }


def test_official_split_lists_are_honoured(tmp_path: Path) -> None:
    """``test_list.txt`` → test; ``train_val_list.txt`` → train or valid by patient hash."""
    raw = _tree(tmp_path / "raw")
    (raw / "test_list.txt").write_text("00000924_000.png\n")
    (raw / "train_val_list.txt").write_text("00002778_000.png\n00005618_000.png\n")
    records = {r["image_id"]: r for r in read_adapter("nih_boxes", raw, {}).records}
    assert records["00000924_000"]["official_split"] == "test"
    assert records["00002778_000"]["official_split"] == TRAIN_OR_VALID

    out = prepare(tmp_path, "nih_boxes", raw)
    split = load_params(REPO / "params.yaml")["split"]
    part = train_or_valid_ratios(validate_ratios(split["ratios"]))
    assert splits_of(out) == {
        "00000924_000": "test",
        "00002778_000": assign_split(split["seed"], "2778", part),
    }
    assert sorted(out["patients"]["patient_id"]) == ["2778", "924"]

    (raw / "test_list.txt").write_text("00002778_000.png\n")
    with pytest.raises(ValueError, match="train_val_list.txt: 00002778_000.png is also in"):
        read_adapter("nih_boxes", raw, {})


def test_missing_data_entry_table_is_a_layout_error(tmp_path: Path) -> None:
    raw = _tree(tmp_path / "raw")
    (raw / "Data_Entry_2017.csv").unlink()
    with pytest.raises(LayoutError, match="Data_Entry_2017.csv"):
        read_adapter("nih_boxes", raw, {})


def test_a_box_table_without_the_release_columns_names_them(tmp_path: Path) -> None:
    raw = _tree(tmp_path / "raw")
    (raw / "BBox_List_2017.csv").write_text("Image Index,Finding Label,x,y,w,h\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Bbox \[x', 'h\]'\]"):
        read_adapter("nih_boxes", raw, {})
