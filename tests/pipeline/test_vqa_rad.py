"""VQA-RAD adapter (public release fixture) and the demo's synthetic VQA set."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.datasets.common import LayoutError
from pipeline.datasets.vqa_rad import (
    VQA_KEYS,
    VqaConfig,
    finish_release,
    ingest_frame,
    read_release,
    run_demo,
    run_stage,
    vqa_split,
)
from pipeline.params import DatasetPaths
from pipeline.records import CHEXPERT_LABELS, INGEST_COLUMNS, write_parquet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vqa_rad"
IMAGE_NAMES = ("synpic100132.jpg", "synpic31757.jpg", "synpic42202.jpg")


def vqa_paths(root: Path, raw: Path = FIXTURE, adapter: str = "vqa_rad") -> DatasetPaths:
    return DatasetPaths(
        name="vqa_rad",
        adapter=adapter,
        raw=raw,
        interim=root / "interim" / "vqa_rad",
        shards=root / "shards" / "vqa_rad",
    )


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def config(root: Path) -> VqaConfig:
    return VqaConfig(json="", image_dir="", image_root=root)


def test_release_is_normalised_and_bad_entries_rejected(tmp_path: Path) -> None:
    release = read_release(FIXTURE, config(tmp_path))
    assert release.n_in == 10
    assert [e["qid"] for e in release.entries] == [0, 1, 2, 3, 7, 8]
    by_qid = {e["qid"]: e for e in release.entries}
    assert all(tuple(e) == VQA_KEYS for e in release.entries)
    assert by_qid[0]["answer_type"] == "CLOSED"  # "CLOSED " in the release
    assert by_qid[1]["answer"] == "Left temporal lobe"
    assert by_qid[3]["answer"] == "2"  # a number in the release
    assert by_qid[7]["question"] == "Is the liver normal?"  # no question_rephrase key
    codes = {(r.id, r.code) for r in release.rejects}
    assert codes == {
        ("4", "no_answer"),
        ("5", "no_answer"),
        ("6", "unknown_image"),
        ("3", "duplicate_qid"),
    }
    unknown = next(r for r in release.rejects if r.code == "unknown_image")
    assert "synpic99999.jpg" in unknown.reason and "VQA_RAD Image Folder" in unknown.reason
    assert release.image_paths == {name: f"VQA_RAD Image Folder/{name}" for name in IMAGE_NAMES}


def test_split_follows_phrase_type() -> None:
    assert vqa_split("test_freeform") == vqa_split("test_para") == "test"
    assert vqa_split("freeform") == vqa_split("para") == "train"


def test_ingest_frame_has_one_row_per_image_for_the_images_stage(tmp_path: Path) -> None:
    frame = ingest_frame("vqa_rad", read_release(FIXTURE, config(tmp_path)))
    assert list(frame.columns) == list(INGEST_COLUMNS)
    assert list(frame["image_id"]) == ["synpic100132", "synpic31757", "synpic42202"]
    assert (frame["report_text"] == "").all() and not frame["synthetic_report"].any()
    assert all((FIXTURE / p).is_file() for p in frame["image_path"])
    assert json.loads(frame["extra_json"].iloc[1]) == {
        "image_name": "synpic31757.jpg",
        "image_organ": "HEAD",
    }


def fake_images_stage(paths: DatasetPaths, rejected: set[str]) -> dict[str, str]:
    """What the images stage reports: image id → image_file, minus the images it rejected."""
    return {
        name.removesuffix(".jpg"): f"files/{name}"
        for name in IMAGE_NAMES
        if name.removesuffix(".jpg") not in rejected
    }


def test_release_outputs_in_mevf_layout_as_json(tmp_path: Path) -> None:
    paths = vqa_paths(tmp_path)
    release = read_release(FIXTURE, config(tmp_path))
    stats = finish_release(
        paths, config(tmp_path), release, fake_images_stage(paths, {"synpic31757"})
    )
    out = paths.stage_dir("vqa")
    train, test = read(out / "trainset.json"), read(out / "testset.json")
    assert [e["qid"] for e in train] == [0, 3, 7]
    assert [e["qid"] for e in test] == [2, 8]  # qid 1's image was rejected by the images stage
    assert all(sorted(e) == sorted(VQA_KEYS) for e in train + test)
    assert {e["phrase_type"] for e in test} == {"test_para", "test_freeform"}
    label2ans = read(out / "label2ans.json")
    ans2label = read(out / "ans2label.json")
    assert label2ans == ["2", "no", "yes"]  # "Yes"/"yes" and "No"/"no" are one answer each
    assert ans2label == {answer: i for i, answer in enumerate(label2ans)}
    for split, entries in (("train", train), ("test", test)):
        targets = read(out / f"{split}_target.json")
        assert [t["qid"] for t in targets] == [e["qid"] for e in entries]
        for target, entry in zip(targets, entries, strict=True):
            assert target["image_name"] == entry["image_name"]
            assert label2ans[target["labels"][0]] == entry["answer"].lower()
            assert target["scores"] == [1.0]
    assert read(out / "imgid2idx.json") == {"synpic100132.jpg": 0, "synpic42202.jpg": 1}
    assert read(out / "image_paths.json") == {
        "synpic100132.jpg": "interim/vqa_rad/images/files/synpic100132.jpg",
        "synpic42202.jpg": "interim/vqa_rad/images/files/synpic42202.jpg",
    }
    rejects = pd.read_parquet(out / "rejects.parquet").set_index("id")
    assert rejects.loc["1", "code"] == "no_image" and "synpic31757" in rejects.loc["1", "reason"]
    assert stats["reconciled"] and stats["in"] == 10 and stats["out"] == 5
    assert stats["train"]["answer_types"] == {"CLOSED": 2, "OPEN": 1}
    assert stats["test"]["organs"] == {"CHEST": 2}
    assert not list(out.glob("*.pkl"))


def test_release_outputs_are_byte_identical_on_rerun(tmp_path: Path) -> None:
    paths = vqa_paths(tmp_path)
    images = fake_images_stage(paths, set())
    finish_release(paths, config(tmp_path), read_release(FIXTURE, config(tmp_path)), images)
    out = paths.stage_dir("vqa")
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "timing.json"}
    finish_release(paths, config(tmp_path), read_release(FIXTURE, config(tmp_path)), images)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "timing.json"} == first


def test_missing_release_files_name_the_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "VQA_RAD Image Folder").mkdir()
    with pytest.raises(LayoutError, match="VQA_RAD Dataset Public.json"):
        read_release(tmp_path, config(tmp_path))
    (tmp_path / "VQA_RAD Dataset Public.json").write_text('{"qid": 0}', encoding="utf-8")
    with pytest.raises(LayoutError, match="expected a JSON list"):
        read_release(tmp_path, config(tmp_path))


def test_release_through_the_images_stage(tmp_path: Path) -> None:
    """End to end: ingest-style table → pipeline.images → VQA files pointing at 512² images."""
    pytest.importorskip("pipeline.images")
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    paths = vqa_paths(tmp_path, raw=raw)
    params = {"images": {"output_size": 64}, "vqa": {"image_root": str(tmp_path)}}
    stats = run_stage(paths, params, workers=1)
    images = pd.read_parquet(paths.stage_dir("images") / "records.parquet")
    assert sorted(images["image_id"]) == ["synpic100132", "synpic31757", "synpic42202"]
    image_paths = read(paths.stage_dir("vqa") / "image_paths.json")
    assert sorted(image_paths) == list(IMAGE_NAMES)
    assert all((tmp_path / p).is_file() for p in image_paths.values())
    assert stats["out"] == 6 and stats["reconciled"]


# --- the demo's synthetic questions --------------------------------------------------------


def demo_inputs(paths: DatasetPaths) -> None:
    """Three images: train (PA), valid (AP), test (AP, rejected by the images stage)."""
    rows = []
    for image_id, split, view in (("a1", "train", "PA"), ("b2", "valid", "AP"), ("c3", "test", "")):
        labels = dict.fromkeys(CHEXPERT_LABELS, math.nan)
        labels.update({"Cardiomegaly": 1.0, "Edema": 0.0, "Pleural Effusion": -1.0})
        rows.append(
            {
                "dataset": "sample",
                "image_id": image_id,
                "patient_id": f"p{image_id}",
                "study_id": f"s{image_id}",
                "view": view,
                "image_path": f"images/{image_id}.png",
                "report_text": "Heart is enlarged.",
                "official_split": "",
                "synthetic_report": True,
                "extra_json": "{}",
                "chosen_text": "Heart is enlarged.",
                **labels,
                "split": split,
            }
        )
    frame = pd.DataFrame(rows)
    write_parquet(frame, paths.stage_dir("split") / "records.parquet")
    images = frame.loc[frame["image_id"] != "c3", list(INGEST_COLUMNS)].copy()
    images["image_file"] = [f"files/{i}.jpg" for i in images["image_id"]]
    write_parquet(images, paths.stage_dir("images") / "records.parquet")


def test_demo_questions_come_from_labels_and_views_and_are_marked_synthetic(
    tmp_path: Path,
) -> None:
    paths = vqa_paths(tmp_path, raw=tmp_path / "raw", adapter="sample")
    demo_inputs(paths)
    stats = run_demo(paths, {"vqa": {"image_root": str(tmp_path)}})
    out = paths.stage_dir("vqa")
    train, test = read(out / "trainset.json"), read(out / "testset.json")
    assert test == []  # the only test image was rejected by the images stage
    assert all(e["synthetic"] is True for e in train)
    assert all(set(e) == {*VQA_KEYS, "synthetic"} for e in train)
    asked = {(e["image_name"], e["question"]): e for e in train}
    # Cardiomegaly 1 → yes, Edema 0 → no, uncertain Pleural Effusion and blanks → no question.
    assert asked[("a1.jpg", "Is there cardiomegaly?")]["answer"] == "yes"
    assert asked[("a1.jpg", "Is there pulmonary edema?")]["answer"] == "no"
    assert not any("pleural effusion" in question for _, question in asked)
    view = asked[("b2.jpg", "Which view is this?")]
    assert (view["answer"], view["answer_type"], view["question_type"]) == ("AP", "OPEN", "PLANE")
    assert asked[("a1.jpg", "Which view is this?")]["answer"] == "PA"
    assert {e["answer_type"] for e in train if e["answer"] in ("yes", "no")} == {"CLOSED"}
    assert [e["qid"] for e in train] == list(range(6))
    assert {e["phrase_type"] for e in train} == {"freeform"}  # valid questions train
    assert read(out / "label2ans.json") == ["ap", "no", "pa", "yes"]  # normalised answers
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert list(rejects["id"]) == ["c3"] and list(rejects["code"]) == ["no_image"]
    assert stats["synthetic"] is True and stats["out"] == 6


def test_report_dataset_gets_synthetic_questions_only_when_named(tmp_path: Path) -> None:
    """vqa.synthetic_for_reports: a MIMIC-scale dataset gets no questions nobody asked for."""
    paths = vqa_paths(tmp_path, raw=tmp_path / "raw", adapter="mimic_cxr")
    demo_inputs(paths)
    out = paths.stage_dir("vqa")
    for setting in (None, False, ["sample"]):  # absent, off, or naming another dataset
        block: dict[str, Any] = {"image_root": str(tmp_path)}
        if setting is not None:
            block["synthetic_for_reports"] = setting
        stats = run_stage(paths, {"vqa": block}, workers=1)
        assert (stats["in"], stats["out"], stats["rejected"]) == (0, 0, 0)
        assert stats["source"] == "none" and stats["report_records"] == 3
        assert "vqa_rad is not in vqa.synthetic_for_reports" in stats["skipped"]
        assert read(out / "trainset.json") == [] and read(out / "testset.json") == []
        assert read(out / "ans2label.json") == {} and read(out / "image_paths.json") == {}
        assert len(pd.read_parquet(out / "records.parquet")) == 0
    for setting in (True, ["vqa_rad"]):
        block = {"image_root": str(tmp_path), "synthetic_for_reports": setting}
        stats = run_stage(paths, {"vqa": block}, workers=1)
        assert stats["source"] == "demo" and stats["out"] == 6


def test_synthetic_for_reports_must_be_bool_or_names() -> None:
    from pipeline.params_schema import validate_params

    base = {"datasets": {"sample": {"adapter": "sample", "raw": "data/sample"}}}
    validate_params({**base, "vqa": {"synthetic_for_reports": ["sample"]}}, "params.yaml")
    validate_params({**base, "vqa": {"synthetic_for_reports": False}}, "params.yaml")
    with pytest.raises(ValueError, match="vqa.synthetic_for_reports"):
        validate_params({**base, "vqa": {"synthetic_for_reports": "sample"}}, "params.yaml")
