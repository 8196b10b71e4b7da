from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from pipeline.outputs import MARKER, StageStateError, check_upstream, upstream_of
from pipeline.records import read_parquet, write_parquet
from pipeline.splits import (
    TRAIN_OR_VALID,
    SplitLeakError,
    assign_split,
    check_patient_level,
    run_stage,
    train_or_valid_ratios,
    validate_ratios,
)
from tests.pipeline.frames import dataset_paths, labelled_records

RATIOS = {"train": 0.8, "valid": 0.1, "test": 0.1}


def test_adding_patients_never_moves_existing_ones() -> None:
    before = {f"p{i}": assign_split(123, f"p{i}", RATIOS) for i in range(500)}
    after = {f"p{i}": assign_split(123, f"p{i}", RATIOS) for i in range(2000)}
    assert all(after[p] == split for p, split in before.items())


def test_hash_split_follows_ratios_and_seed() -> None:
    splits = pd.Series([assign_split(7, f"patient-{i}", RATIOS) for i in range(20000)])
    shares = splits.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.01)
    assert shares["valid"] == pytest.approx(0.1, abs=0.01)
    assert shares["test"] == pytest.approx(0.1, abs=0.01)
    other_seed = [assign_split(8, f"patient-{i}", RATIOS) for i in range(200)]
    assert other_seed != splits.iloc[:200].tolist()


def test_ratios_are_validated() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        validate_ratios({"train": 0.8, "valid": 0.1})
    with pytest.raises(ValueError, match="unknown split"):
        validate_ratios({"train": 0.9, "dev": 0.1})


def test_leak_is_detected_and_named() -> None:
    frame = pd.DataFrame(
        {"patient_id": ["10001", "10001", "10002"], "split": ["train", "test", "train"]}
    )
    with pytest.raises(SplitLeakError, match="1 patient.*10001"):
        check_patient_level(frame)


def test_stage_keeps_patients_together_and_reconciles(tmp_path) -> None:
    paths = dataset_paths(tmp_path)
    rows = [{"image_id": f"img{i}", "patient_id": f"pat{i // 2}"} for i in range(60)]
    write_parquet(labelled_records(rows), paths.stage_dir("label") / "records.parquet")
    params = {"split": {"seed": 123, "ratios": RATIOS, "use_official": True}}
    stats = run_stage(paths, params, workers=1)

    out = read_parquet(paths.stage_dir("split") / "records.parquet")
    assert len(out) == 60 and stats["in"] == 60 and stats["out"] == 60
    assert (out.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(out["split"]) == {"train", "valid", "test"}
    assert stats["source"] == "hash"
    written = json.loads((paths.stage_dir("split") / "stats.json").read_text())
    assert sum(s["records"] for s in written["splits"].values()) == 60
    assert sum(s["patients"] for s in written["splits"].values()) == 30


def test_official_split_wins_and_leaks_fail_loudly(tmp_path) -> None:
    paths = dataset_paths(tmp_path)
    rows = [
        {"image_id": "a", "patient_id": "1", "official_split": "test"},
        {"image_id": "b", "patient_id": "2", "official_split": "valid"},
        {"image_id": "c", "patient_id": "3", "official_split": "train"},
    ]
    write_parquet(labelled_records(rows), paths.stage_dir("label") / "records.parquet")
    stats = run_stage(paths, {"split": {"use_official": True}}, workers=1)
    out = read_parquet(paths.stage_dir("split") / "records.parquet").set_index("image_id")
    assert out.loc["a", "split"] == "test" and out.loc["b", "split"] == "valid"
    assert stats["source"] == "official"

    rows.append({"image_id": "d", "patient_id": "1", "official_split": "train"})
    write_parquet(labelled_records(rows), paths.stage_dir("label") / "records.parquet")
    with pytest.raises(SplitLeakError, match="patient"):
        run_stage(paths, {"split": {"use_official": True}}, workers=1)


def test_release_training_part_is_divided_between_train_and_valid_only(tmp_path) -> None:
    """``train_or_valid`` records (a release that sets only its test set apart) go to train
    or valid by patient hash with those two ratios renormalised; official test stays test."""
    paths = dataset_paths(tmp_path)
    rows = [{"image_id": f"img{i}", "patient_id": f"pat{i // 2}"} for i in range(2000)]
    records = labelled_records(rows)
    records["official_split"] = [TRAIN_OR_VALID] * 1800 + ["test"] * 200
    write_parquet(records, paths.stage_dir("label") / "records.parquet")
    stats = run_stage(paths, {"split": {"seed": 5, "ratios": RATIOS}}, workers=1)

    out = read_parquet(paths.stage_dir("split") / "records.parquet")
    assert set(out["split"][1800:]) == {"test"}
    shares = out["split"][:1800].value_counts(normalize=True)
    assert set(shares.index) == {"train", "valid"}
    assert shares["valid"] == pytest.approx(0.1 / 0.9, abs=0.03)
    expected = assign_split(5, "pat3", train_or_valid_ratios(validate_ratios(RATIOS)))
    assert out["split"][6] == out["split"][7] == expected
    assert stats["source"] == "official" and stats["official_rows"] == 2000
    check_patient_level(out)

    with pytest.raises(ValueError, match="nothing for train or valid"):
        train_or_valid_ratios({"train": 0.0, "valid": 0.0, "test": 1.0})


def test_localized_dataset_is_split_from_its_ingest_records(tmp_path) -> None:
    """A localized adapter has no label stage: the split reads ``ingest/records.parquet``."""
    paths = replace(dataset_paths(tmp_path), adapter="rsna_pneumonia")
    rows = [{"image_id": f"img{i}", "patient_id": f"pat{i}"} for i in range(30)]
    write_parquet(labelled_records(rows), paths.stage_dir("ingest") / "records.parquet")
    stats = run_stage(paths, {"split": {"seed": 123, "ratios": RATIOS}}, workers=1)
    out = read_parquet(paths.stage_dir("split") / "records.parquet")
    assert stats["in"] == stats["out"] == 30 and stats["source"] == "hash"
    assert list(out["split"]) == [assign_split(123, f"pat{i}", RATIOS) for i in range(30)]


def test_localized_split_refuses_an_interrupted_ingest_folder(tmp_path) -> None:
    """The split of a localized dataset checks the folder it reads: ingest's marker."""
    paths = replace(dataset_paths(tmp_path), adapter="object_cxr")
    write_parquet(labelled_records([{"image_id": "a", "patient_id": "a"}]),
                  paths.stage_dir("ingest") / "records.parquet")  # fmt: skip
    (paths.stage_dir("ingest") / MARKER).write_text(json.dumps({"state": "running"}))
    with pytest.raises(StageStateError, match=r"ingest is incomplete.*split will not read"):
        check_upstream("split", paths, {})
    assert upstream_of("split", dataset_paths(tmp_path)) == ("label",)
