"""The pairs stage: every task file is read back and checked against docs/formats.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.pairs import PairsConfig, run_stage
from pipeline.params import DatasetPaths
from pipeline.records import CHEXPERT_LABELS, sample_key, write_parquet
from pipeline.taskfiles.common import format_label, parse_label, positive_labels
from pipeline.taskfiles.jsonl import read_jsonl, read_task_file

NAN = math.nan
#: Positive label sets cycled over the fixture studies (() = labelled, nothing positive).
LABEL_SETS: tuple[tuple[str, ...], ...] = (
    ("Cardiomegaly",),
    ("Edema", "Pleural Effusion"),
    (),
    ("No Finding",),
    ("Atelectasis", "Support Devices"),
)
STUDIES = {"train": 14, "valid": 7, "test": 5}


def label_values(positives: tuple[str, ...] | None) -> dict[str, float]:
    """14 values with the given positives, one negative and one uncertain, rest blank."""
    values = dict.fromkeys(CHEXPERT_LABELS, NAN)
    if positives is None:
        return values
    for name in positives:
        values[name] = 1.0
    values["Pneumothorax"] = 0.0
    values["Fracture"] = -1.0
    return values


def ingest_row(image_id: str, study: str, patient: str, dataset: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "image_id": image_id,
        "patient_id": patient,
        "study_id": study,
        "view": "AP",
        "image_path": f"raw/{image_id}.png",
        "report_text": "",
        "official_split": "",
        "synthetic_report": False,
        "extra_json": "{}",
    }


def build_inputs(
    paths: DatasetPaths,
    studies: dict[str, int] = STUDIES,
    label_sets: tuple[tuple[str, ...], ...] = LABEL_SETS,
    unlabelled: tuple[int, ...] = (3, 16),
    rejected_images: tuple[str, ...] = ("img0005b",),
    empty_text: tuple[int, ...] = (8,),
) -> pd.DataFrame:
    """Write split + images records like the colleagues' stages do; return the split frame.

    Study ``n`` has two images (``…a``, ``…b``) when ``n % 3 == 2``; ``unlabelled`` studies
    have 14 blank labels; ``rejected_images`` are missing from the images stage output.
    """
    split_rows, image_rows = [], []
    number = 0
    for split, count in studies.items():
        for _ in range(count):
            study, patient = f"{50000000 + number}", f"{10000000 + number // 2}"
            positives = None if number in unlabelled else label_sets[number % len(label_sets)]
            text = "" if number in empty_text else f"Report {number}: findings for study {study}."
            suffixes = ("a", "b") if number % 3 == 2 else ("a",)
            for suffix in suffixes:
                image_id = f"img{number:04d}{suffix}"
                base = ingest_row(image_id, study, patient, paths.name)
                split_rows.append(
                    {
                        **base,
                        "report_text": f"FINDINGS: {text}",
                        "findings": text,
                        "impression": "",
                        "chosen_text": text,
                        "chosen_section": "findings",
                        **label_values(positives),
                        "split": split,
                    }
                )
                if image_id not in rejected_images:
                    image_rows.append({**base, "image_file": f"files/{image_id}.jpg"})
            number += 1
    split_frame = pd.DataFrame(split_rows)
    write_parquet(split_frame, paths.stage_dir("split") / "records.parquet")
    write_parquet(pd.DataFrame(image_rows), paths.stage_dir("images") / "records.parquet")
    return split_frame


def make_paths(root: Path, adapter: str = "mimic_cxr", name: str = "mimic_cxr") -> DatasetPaths:
    return DatasetPaths(
        name=name,
        adapter=adapter,
        raw=root / "raw",
        interim=root / "interim" / name,
        shards=root / "shards" / name,
    )


def params_for(root: Path, **overrides: Any) -> dict[str, Any]:
    block = {
        "seed": 7,
        "image_root": str(root),
        "irm_negatives_k": 3,
        "retrieval_candidates": 4,
        **overrides,
    }
    return {"pairs": block}


@pytest.fixture
def mimic(tmp_path: Path) -> tuple[DatasetPaths, pd.DataFrame, dict[str, Any]]:
    paths = make_paths(tmp_path)
    frame = build_inputs(paths)
    stats = run_stage(paths, params_for(tmp_path), workers=1)
    return paths, frame, stats


def expected_labels(frame: pd.DataFrame, image_id: str) -> frozenset[str] | None:
    row = frame.set_index("image_id").loc[image_id]
    return positive_labels([row[name] for name in CHEXPERT_LABELS])


def jsonl_by_id(out: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name in ("Train", "Valid", "Test"):
        for row in read_task_file(out / f"{name}.jsonl"):
            rows[row["id"]] = row
    return rows


# --- label strings ------------------------------------------------------------------------


def test_label_string_is_quoted_sorted_and_round_trips() -> None:
    labels = {"Support Devices", "Atelectasis", "Edema"}
    text = format_label(labels, "mimic")
    assert text == "'Atelectasis', 'Edema', 'Support Devices'"
    assert parse_label(text) == frozenset(labels)
    assert format_label(set(), "mimic") == ""
    assert format_label(set(), "openi") == "''"
    assert parse_label("") == parse_label("''") == frozenset()
    assert parse_label("'Edema','Atelectasis'") == frozenset({"Atelectasis", "Edema"})
    with pytest.raises(ValueError, match="not CheXpert"):
        format_label({"Cardiomegally"}, "mimic")


def test_positive_labels_tell_unlabelled_from_no_positive() -> None:
    assert positive_labels([NAN] * 14) is None
    assert positive_labels(list(label_values(()).values())) == frozenset()
    assert positive_labels(list(label_values(("Edema",)).values())) == {"Edema"}


# --- report/image JSONL ---------------------------------------------------------------------


def test_mimic_jsonl_key_order_values_and_one_line_per_study(mimic) -> None:
    paths, frame, stats = mimic
    out = paths.stage_dir("pairs")
    usable = frame[(frame["chosen_text"] != "") & (frame["image_id"] != "img0005b")]
    for name, split in (("Train", "train"), ("Valid", "valid"), ("Test", "test")):
        lines = read_jsonl(out / f"{name}.jsonl")
        expected_studies = sorted(set(usable.loc[usable["split"] == split, "study_id"]))
        assert [line["id"] for line in lines] == [f"s{s}" for s in expected_studies]
        for line in lines:
            assert list(line) == ["id", "split", "label", "text", "img"]
            assert all(isinstance(value, str) for value in line.values())
            assert line["split"] == split
            study_rows = usable[usable["study_id"] == line["id"][1:]]
            first_image = sorted(study_rows["image_id"])[0]
            assert line["img"] == f"interim/mimic_cxr/images/files/{first_image}.jpg"
            assert line["text"] == study_rows["chosen_text"].iloc[0]
            labels = expected_labels(frame, first_image)
            assert line["label"] == format_label(labels or set(), "mimic")
    # Raw bytes: json.dumps default separators, UTF-8, newline-terminated lines.
    raw = (out / "Train.jsonl").read_text(encoding="utf-8")
    assert raw.startswith('{"id": "s50000000", "split": "train", "label": "\'Cardiomegaly\'", ')
    assert raw.endswith("}\n")
    assert stats["jsonl_lines"] == {"train": 13, "valid": 7, "test": 5}


def test_openi_style_has_no_split_key_and_quotes_empty_label(tmp_path: Path) -> None:
    paths = make_paths(tmp_path, adapter="openi", name="openi")
    frame = build_inputs(paths)
    run_stage(paths, params_for(tmp_path), workers=1)
    lines = read_jsonl(paths.stage_dir("pairs") / "Train.jsonl")
    images = frame.loc[(frame["split"] == "train") & (frame["chosen_text"] != ""), "image_id"]
    assert [line["id"] for line in lines] == sorted(set(images) - {"img0005b"})
    assert {tuple(line) for line in lines} == {("id", "label", "text", "img")}
    empties = [line for line in lines if not parse_label(line["label"])]
    assert empties and all(line["label"] == "''" for line in empties)


def test_unlabelled_records_stay_in_jsonl_and_irm_pool_but_are_nobodys_negative(mimic) -> None:
    paths, _, stats = mimic
    out = paths.stage_dir("pairs")
    train = {line["id"]: line for line in read_jsonl(out / "Train.jsonl")}
    assert train["s50000003"]["label"] == ""  # study 3 is unlabelled
    irm = pq.read_table(out / "irm_negatives.parquet").to_pydict()
    unlabelled_key = sample_key("mimic_cxr", "img0003a")
    row = irm["key"].index(unlabelled_key)  # in the pool: the loader draws negatives for it
    assert irm["labels"][row] is None and irm["negative_keys"][row] == []
    assert all(unlabelled_key not in negatives for negatives in irm["negative_keys"])
    for direction in ("I2T", "T2I"):
        lines = read_jsonl(out / f"{direction}_Label_Valid.jsonl")
        assert "s50000016" not in {line["id"] for line in lines} | {line["T_id"] for line in lines}
    assert stats["splits"]["train"]["unlabelled"] == 1
    assert stats["splits"]["valid"]["unlabelled"] == 1
    assert stats["irm"]["unlabelled_skipped"] == 1
    assert stats["retrieval"]["I2T_Label_Valid"]["unlabelled_skipped"] == 1
    records = pd.read_parquet(out / "records.parquet")
    assert not records.set_index("task_id").loc["s50000003", "labelled"]


# --- IRM negatives ---------------------------------------------------------------------------


def test_irm_negatives_have_other_label_sets_from_the_training_split(mimic) -> None:
    paths, frame, stats = mimic
    out = paths.stage_dir("pairs")
    table = pq.read_table(out / "irm_negatives.parquet")
    assert table.column_names == ["key", "text", "negative_keys", "labels"]
    assert str(table.schema.field("negative_keys").type) == "list<element: string>"
    assert str(table.schema.field("labels").type) == "list<element: string>"
    rows = table.to_pylist()
    by_key = {sample_key("mimic_cxr", i): i for i in frame["image_id"]}
    train_keys = {
        sample_key("mimic_cxr", line["img"].rsplit("/", 1)[1].removesuffix(".jpg"))
        for line in read_jsonl(out / "Train.jsonl")
    }
    labelled_train = {k for k in train_keys if expected_labels(frame, by_key[k]) is not None}
    assert [row["key"] for row in rows] == sorted(train_keys)  # every training record
    for row in rows:
        expected = expected_labels(frame, by_key[row["key"]])
        assert row["labels"] == (None if expected is None else sorted(expected))
    rows = [row for row in rows if row["key"] in labelled_train]
    for row in rows:
        query_labels = expected_labels(frame, by_key[row["key"]])
        assert len(row["negative_keys"]) == 3
        assert len(set(row["negative_keys"])) == 3  # pool >= K: drawn without replacement
        assert row["text"] == frame.set_index("image_id").loc[by_key[row["key"]], "chosen_text"]
        for negative in row["negative_keys"]:
            assert negative in train_keys
            assert expected_labels(frame, by_key[negative]) not in (None, query_labels)
    assert stats["irm"]["with_negatives"] == len(rows) == stats["irm"]["labelled_queries"]
    assert stats["irm"]["no_negative"] == 0


def test_irm_split_with_one_label_set_reports_no_negative_and_terminates(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    build_inputs(paths, label_sets=((),), unlabelled=(), rejected_images=(), empty_text=())
    stats = run_stage(paths, params_for(tmp_path), workers=1)
    table = pq.read_table(paths.stage_dir("pairs") / "irm_negatives.parquet").to_pydict()
    assert len(table["key"]) == 14 and all(n == [] for n in table["negative_keys"])
    assert stats["irm"]["no_negative"] == stats["irm"]["labelled_queries"] == 14
    # Two empty label sets are the same set (unlike the original's fuzzy string check), so
    # no retrieval candidate is misaligned either: every flag is [1].
    lines = read_jsonl(paths.stage_dir("pairs") / "T2I_Label_Test.jsonl")
    assert lines and all(line["is_aligned"] == [1] for line in lines)


def test_irm_small_pool_draws_with_replacement(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    build_inputs(
        paths,
        studies={"train": 6, "valid": 2, "test": 2},
        label_sets=(("Edema",), ("Edema",), ("Edema",), ("Edema",), ("Edema",), ()),
        unlabelled=(),
        rejected_images=(),
        empty_text=(),
    )
    stats = run_stage(paths, params_for(tmp_path, irm_negatives_k=3), workers=1)
    rows = pq.read_table(paths.stage_dir("pairs") / "irm_negatives.parquet").to_pylist()
    lonely = sample_key("mimic_cxr", "img0005a")  # the only study without Edema
    by_key = {row["key"]: row["negative_keys"] for row in rows}
    assert all(by_key[key] == [lonely] * 3 for key in by_key if key != lonely)
    assert len(by_key[lonely]) == 3 and lonely not in by_key[lonely]
    assert stats["irm"]["small_pool_with_replacement"] == 5


def test_study_record_takes_its_first_ap_image_over_an_earlier_pa(tmp_path: Path) -> None:
    """MedViLL's pairs are AP: a study with PA img…a and AP img…b is represented by img…b."""
    paths = make_paths(tmp_path)
    build_inputs(paths, rejected_images=())
    for stage in ("split", "images"):
        path = paths.stage_dir(stage) / "records.parquet"
        frame = pd.read_parquet(path)
        frame.loc[frame["image_id"] == "img0002a", "view"] = "PA"
        write_parquet(frame, path)
    run_stage(paths, params_for(tmp_path), workers=1)
    records = pd.read_parquet(paths.stage_dir("pairs") / "records.parquet").set_index("image_id")
    assert (
        records.loc["img0002b", "representative"] and not records.loc["img0002a", "representative"]
    )
    assert records.loc["img0005a", "representative"]  # both AP: the first image id
    train = {line["id"]: line for line in read_jsonl(paths.stage_dir("pairs") / "Train.jsonl")}
    assert train["s50000002"]["img"].endswith("img0002b.jpg")


# --- retrieval blocks ------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["I2T", "T2I"])
@pytest.mark.parametrize("split", ["Valid", "Test"])
def test_retrieval_blocks_have_one_true_pair_and_consistent_flags(
    mimic, direction: str, split: str
) -> None:
    paths, _, stats = mimic
    out = paths.stage_dir("pairs")
    records = jsonl_by_id(out)
    split_ids = {line["id"] for line in read_jsonl(out / f"{split}.jsonl")}
    table = pd.read_parquet(out / "records.parquet")
    labelled = set(table.loc[table["labelled"], "task_id"])
    queries = sorted(split_ids & labelled)
    assert len(queries) < len(split_ids) or split == "Test"  # Valid holds an unlabelled study
    lines = read_task_file(out / f"{direction}_Label_{split}.jsonl")
    block = 4
    assert len(lines) == len(queries) * block
    positions = set()
    for start in range(0, len(lines), block):
        chunk = lines[start : start + block]
        for line in chunk:
            assert list(line) == ["id", "split", "label", "is_aligned", "T_id", "text", "img"]
            assert line["id"] in split_ids and line["T_id"] in split_ids
            assert line["split"] == split.lower()
            assert line["label"] == records[line["id"]]["label"]
            assert line["text"] == records[line["T_id"]]["text"]
            assert line["img"] == records[line["id"]]["img"]
            aligned = records[line["id"]]["label"] == records[line["T_id"]]["label"]
            assert line["is_aligned"] == [1 if aligned else 0]
        query_field, candidate_field = ("id", "T_id") if direction == "I2T" else ("T_id", "id")
        assert len({line[query_field] for line in chunk}) == 1
        assert len({line[candidate_field] for line in chunk}) == block  # no repeats
        true_pairs = [i for i, line in enumerate(chunk) if line["id"] == line["T_id"]]
        assert len(true_pairs) == 1
        positions.add(true_pairs[0])
    assert [chunk[query_field] for chunk in lines[::block]] == queries
    assert len(positions) > 1, "the true pair should not always sit at the same position"
    file_stats = stats["retrieval"][f"{direction}_Label_{split}"]
    assert file_stats["queries"] == len(queries) and file_stats["block_size"] == block


def test_retrieval_block_uses_whole_split_when_smaller_than_n(mimic, tmp_path: Path) -> None:
    paths, _, _ = mimic
    stats = run_stage(paths, params_for(tmp_path, retrieval_candidates=100), workers=1)
    test_stats = stats["retrieval"]["T2I_Label_Test"]
    assert test_stats["block_size"] == 5 < test_stats["requested_block_size"] == 100
    assert test_stats["queries_with_fewer_candidates"] == 5
    lines = read_jsonl(paths.stage_dir("pairs") / "T2I_Label_Test.jsonl")
    assert len(lines) == 25
    for start in range(0, 25, 5):
        assert len({line["id"] for line in lines[start : start + 5]}) == 5


# --- R2Gen export ----------------------------------------------------------------------------


def test_r2gen_annotation_matches_the_records(mimic) -> None:
    paths, frame, stats = mimic
    out = paths.stage_dir("pairs")
    data = json.loads((out / "annotation.json").read_text(encoding="utf-8"))
    assert list(data) == ["test", "train", "val"]
    usable = frame[(frame["chosen_text"] != "") & (frame["image_id"] != "img0005b")]
    for ours, theirs in (("Train", "train"), ("Valid", "val"), ("Test", "test")):
        lines = read_jsonl(out / f"{ours}.jsonl")
        entries = data[theirs]
        assert [e["id"] for e in entries] == [line["id"] for line in lines]
        for entry, line in zip(entries, lines, strict=True):
            assert set(entry) == {"id", "report", "image_path", "split", "study_id", "subject_id"}
            assert entry["report"] == line["text"] and entry["split"] == theirs
            study = usable[usable["study_id"] == line["id"][1:]]
            assert entry["image_path"][0] == line["img"]
            assert entry["image_path"] == [
                f"interim/mimic_cxr/images/files/{i}.jpg" for i in sorted(study["image_id"])
            ]
            assert entry["study_id"] == int(line["id"][1:])
            assert entry["subject_id"] == int(study["patient_id"].iloc[0])
    assert stats["r2gen_entries"] == {"train": 13, "val": 7, "test": 5}
    two_images = next(e for e in data["train"] if e["id"] == "s50000002")
    assert len(two_images["image_path"]) == 2


# --- rejects, stats, determinism ---------------------------------------------------------


def test_rejects_name_the_image_and_counts_reconcile(mimic) -> None:
    paths, frame, stats = mimic
    out = paths.stage_dir("pairs")
    rejects = pd.read_parquet(out / "rejects.parquet").set_index("id")
    assert rejects.loc["img0005b", "code"] == "no_image"
    assert "img0005b" in rejects.loc["img0005b", "reason"]
    assert "rejected by the images stage" in rejects.loc["img0005b", "reason"]
    assert rejects.loc["img0008a", "code"] == "empty_text"
    assert stats["in"] == len(frame) and stats["reconciled"]
    assert stats["reject_reasons"] == {"empty_text": 2, "no_image": 1}  # study 8: 2 images
    records = pd.read_parquet(out / "records.parquet")
    assert records["representative"].sum() == sum(stats["jsonl_lines"].values())
    study_5 = records[records["task_id"] == "s50000005"]
    assert list(study_5["image_id"]) == ["img0005a"]  # its other image was rejected upstream
    assert stats["splits"]["train"]["distinct_label_sets"] == 5


def test_bad_split_is_rejected_and_missing_columns_named(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    frame = build_inputs(paths)
    frame.loc[frame["image_id"] == "img0001a", "split"] = "holdout"
    write_parquet(frame, paths.stage_dir("split") / "records.parquet")
    stats = run_stage(paths, params_for(tmp_path), workers=1)
    assert stats["reject_reasons"]["bad_split"] == 1
    write_parquet(frame.drop(columns=["Edema"]), paths.stage_dir("split") / "records.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Edema'\]"):
        run_stage(paths, params_for(tmp_path), workers=1)


def test_unknown_param_values_fail_with_the_key_name() -> None:
    with pytest.raises(ValueError, match="pairs.unit"):
        PairsConfig.from_params({"pairs": {"unit": "patient"}}, "sample")
    with pytest.raises(ValueError, match="pairs.irm_negatives_k"):
        PairsConfig.from_params({"pairs": {"irm_negatives_k": 0}}, "sample")
    assert PairsConfig.from_params({}, "openi").style == "openi"
    assert PairsConfig.from_params({}, "sample").unit == "image"


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "timing.json"}


def test_rerun_is_byte_identical_and_seed_changes_samples(mimic, tmp_path: Path) -> None:
    paths, _, _ = mimic
    out = paths.stage_dir("pairs")
    first = snapshot(out)
    assert set(first) >= {
        "Train.jsonl",
        "Valid.jsonl",
        "Test.jsonl",
        "irm_negatives.parquet",
        "I2T_Label_Valid.jsonl",
        "I2T_Label_Test.jsonl",
        "T2I_Label_Valid.jsonl",
        "T2I_Label_Test.jsonl",
        "annotation.json",
        "label_sets.json",
        "records.parquet",
        "rejects.parquet",
        "stats.json",
    }
    run_stage(paths, params_for(tmp_path), workers=1)
    assert snapshot(out) == first
    run_stage(paths, params_for(tmp_path, seed=8), workers=1)
    second = snapshot(out)
    for name in ("irm_negatives.parquet", "I2T_Label_Valid.jsonl", "T2I_Label_Valid.jsonl"):
        assert second[name] != first[name], name
    for name in ("Train.jsonl", "annotation.json", "records.parquet"):
        assert second[name] == first[name], name
