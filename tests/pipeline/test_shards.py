from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from pipeline.records import CHEXPERT_LABELS, read_parquet, sample_key, write_parquet
from pipeline.shards import TAR_MTIME, run_stage
from tests.pipeline.frames import dataset_paths, labelled_records

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "data/sample/images"
SAMPLE_JPEG = SAMPLE_IMAGES / "derived_jpeg/00002778_000_gray_q90.jpg"


def _jpeg_bytes(seed: int) -> bytes:
    """A real chest X-ray (NIH sample) shrunk to 64², shifted per seed so images differ."""
    image = Image.open(SAMPLE_JPEG).convert("L").resize((64, 64))
    array = np.roll(np.asarray(image), seed, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_pairs(paths, records, tasks: dict[str, str] | None = None, unpaired=()) -> None:
    """pairs/records.parquet as the pairs stage writes it: ``tasks`` maps image → task id
    (default: one task per image); a task's first image id stands for it."""
    rows = records[~records["image_id"].isin(unpaired)]
    task_ids = [(tasks or {}).get(i, i) for i in rows["image_id"]]
    first: dict[str, str] = {}
    for image_id, task in sorted(zip(rows["image_id"], task_ids, strict=True)):
        first.setdefault(task, image_id)
    frame = pd.DataFrame(
        {
            "image_id": rows["image_id"].tolist(),
            "task_id": task_ids,
            "representative": [
                first[t] == i for i, t in zip(rows["image_id"], task_ids, strict=True)
            ],
        }
    )
    write_parquet(frame, paths.stage_dir("pairs") / "records.parquet")


def _prepare(tmp_path: Path, n: int = 7, missing: tuple[str, ...] = ()) -> tuple:
    paths = dataset_paths(tmp_path, "toy")
    rows = [
        {
            "image_id": f"img{i:02d}",
            "patient_id": f"pat{i}",
            "positives": ["Cardiomegaly"] if i % 2 else [],
            "text": f"Report number {i}. Heart size is normal.",
        }
        for i in range(n)
    ]
    records = labelled_records(rows)
    records["split"] = ["train", "train", "train", "valid", "test", "train", "valid"][:n]
    records.loc[0, "No Finding"] = 0.0
    records.loc[2, "Edema"] = -1.0
    write_parquet(records, paths.stage_dir("split") / "records.parquet")
    image_rows = records[~records["image_id"].isin(missing)].copy()
    image_rows["image_file"] = [f"files/{i}.jpg" for i in image_rows["image_id"]]
    for i, image_file in enumerate(image_rows["image_file"]):
        target = paths.stage_dir("images") / image_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_jpeg_bytes(i))
    write_parquet(image_rows, paths.stage_dir("images") / "records.parquet")
    _write_pairs(paths, records[~records["image_id"].isin(missing)])
    return paths, records


def test_shards_hold_every_sample_with_exact_members(tmp_path: Path) -> None:
    paths, _ = _prepare(tmp_path)
    stats = run_stage(paths, {"shards": {"samples_per_shard": 2}}, workers=1)
    assert (stats["in"], stats["out"], stats["rejected"]) == (7, 7, 0)

    index = json.loads((paths.shards / "index.json").read_text())
    assert index["total"] == 7
    assert index["splits"]["train"]["total"] == 4
    assert [s["samples"] for s in index["splits"]["train"]["shards"]] == [2, 2]
    assert [s["file"] for s in index["splits"]["valid"]["shards"]] == ["valid/shard-000000.tar"]

    shard = paths.shards / "train/shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "toy_img00.jpg",
            "toy_img00.json",
            "toy_img00.txt",
            "toy_img01.jpg",
            "toy_img01.json",
            "toy_img01.txt",
        ]
        assert {m.mtime for m in members} == {int(TAR_MTIME)}
        assert {m.uname for m in members} == {"medvill"}

    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    first = samples[0]
    assert first["__key__"] == sample_key("toy", "img00")
    assert first["jpg"] == (paths.stage_dir("images") / "files/img00.jpg").read_bytes()
    assert first["txt"].decode() == "Report number 0. Heart size is normal."
    meta = json.loads(first["json"])
    assert meta["split"] == "train" and meta["image_id"] == "img00"
    assert len(meta["labels"]) == len(CHEXPERT_LABELS)
    assert meta["labels"][CHEXPERT_LABELS.index("No Finding")] == 0.0
    assert meta["labels"][CHEXPERT_LABELS.index("Cardiomegaly")] is None
    second = json.loads(samples[1]["json"])
    assert second["labels"][CHEXPERT_LABELS.index("Cardiomegaly")] == 1.0
    # the sections stage's sentences of the chosen text travel with the sample
    assert meta["sentences"] == ["Report number 0.", "Heart size is normal."]


def test_records_without_sentences_are_refused_by_name(tmp_path: Path) -> None:
    """A split table built before the sections stage split sentences names the missing column
    and the file, instead of writing samples without them."""
    paths, records = _prepare(tmp_path)
    write_parquet(records.drop(columns=["sentences_json"]),
                  paths.stage_dir("split") / "records.parquet")  # fmt: skip
    with pytest.raises(ValueError, match=r"split/records.parquet: missing column.*sentences_json"):
        run_stage(paths, {"shards": {"samples_per_shard": 2}}, workers=1)


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    paths, _ = _prepare(tmp_path)
    run_stage(paths, {"shards": {"samples_per_shard": 3}}, workers=1)
    first = {p: p.read_bytes() for p in sorted(paths.shards.rglob("*")) if p.is_file()}
    run_stage(paths, {"shards": {"samples_per_shard": 3}}, workers=1)
    second = {p: p.read_bytes() for p in sorted(paths.shards.rglob("*")) if p.is_file()}
    assert first == second and len(first) == 6  # index, members + 2 train, 1 valid, 1 test shard


def test_record_without_processed_image_is_rejected_by_name(tmp_path: Path) -> None:
    paths, _ = _prepare(tmp_path, missing=("img03",))
    stats = run_stage(paths, {"shards": {"samples_per_shard": 10}}, workers=1)
    assert (stats["in"], stats["out"], stats["rejected"]) == (7, 6, 1)
    rejects = read_parquet(paths.stage_dir("shards") / "rejects.parquet")
    assert rejects["id"].tolist() == ["img03"]
    assert rejects["code"].tolist() == ["no_image"]
    assert "images/img03.png" in rejects["reason"].iloc[0]
    assert stats["reject_reasons"] == {"no_image": 1}


def test_fewer_shards_on_rerun_removes_stale_ones(tmp_path: Path) -> None:
    paths, _ = _prepare(tmp_path)
    run_stage(paths, {"shards": {"samples_per_shard": 1}}, workers=1)
    assert len(list((paths.shards / "train").glob("*.tar"))) == 4
    run_stage(paths, {"shards": {"samples_per_shard": 100}}, workers=1)
    assert [p.name for p in (paths.shards / "train").glob("*.tar")] == ["shard-000000.tar"]


def test_invalid_shard_size_is_refused(tmp_path: Path) -> None:
    paths, _ = _prepare(tmp_path)
    with pytest.raises(ValueError, match="samples_per_shard"):
        run_stage(paths, {"shards": {"samples_per_shard": 0}}, workers=1)


def test_member_index_lists_every_member_where_the_tar_has_it(tmp_path: Path) -> None:
    """members.parquet, listed in index.json: each regular member's name, data offset and
    size exactly as the tar headers give them, for every shard."""
    import pyarrow.parquet as pq

    paths, _ = _prepare(tmp_path)
    run_stage(paths, {"shards": {"samples_per_shard": 2}}, workers=1)
    index = json.loads((paths.shards / "index.json").read_text())
    assert index["members"] == "members.parquet"
    table = pq.read_table(paths.shards / "members.parquet").to_pylist()
    files = [s["file"] for split in index["splits"].values() for s in split["shards"]]
    assert sorted({row["shard"] for row in table}) == sorted(files)
    for relative in files:
        rows = [r for r in table if r["shard"] == relative]
        with tarfile.open(paths.shards / relative) as tar:
            expected = [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isreg()]
        assert [(r["name"], r["offset"], r["size"]) for r in rows] == expected
        size = (paths.shards / relative).stat().st_size
        assert {r["shard_bytes"] for r in rows} == {size}


def test_shards_keep_one_image_per_task_record_as_the_task_files(tmp_path: Path) -> None:
    """pairs.unit: study — img00..img02 are one study (task s1): only img00 is a sample."""
    paths, records = _prepare(tmp_path)
    _write_pairs(paths, records, tasks={"img00": "s1", "img01": "s1", "img02": "s1"})
    stats = run_stage(paths, {"shards": {"samples_per_shard": 10}}, workers=1)
    assert (stats["in"], stats["out"], stats["rejected"]) == (7, 5, 2)
    assert stats["reject_reasons"] == {"not_task_image": 2}
    rejects = read_parquet(paths.stage_dir("shards") / "rejects.parquet")
    assert rejects["id"].tolist() == ["img01", "img02"]
    assert "task record s1 is image img00" in rejects["reason"].iloc[0]
    samples = list(wds.WebDataset(str(paths.shards / "train/shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [sample_key("toy", i) for i in ("img00", "img05")]
    assert json.loads(samples[0]["json"])["task_id"] == "s1"


def test_image_the_pairs_stage_rejected_is_not_a_sample(tmp_path: Path) -> None:
    paths, records = _prepare(tmp_path)
    _write_pairs(paths, records, unpaired=("img04",))
    stats = run_stage(paths, {"shards": {"samples_per_shard": 10}}, workers=1)
    assert (stats["in"], stats["out"], stats["reject_reasons"]) == (7, 6, {"not_paired": 1})
    rejects = read_parquet(paths.stage_dir("shards") / "rejects.parquet")
    assert rejects["id"].tolist() == ["img04"] and "pairs stage" in rejects["reason"].iloc[0]
