"""The shards stage: WebDataset tar shards per split, plus a shard index.

Sample layout (docs/architecture.md §4): key ``<dataset>_<image_id>``; members ``jpg`` (or ``png``)
— the 512×512 image from the images stage, byte for byte; ``txt`` — the chosen report text; ``json``
— ids, view, section texts, split and the 14 CheXpert labels (null = blank) in the fixed order of
``CHEXPERT_LABELS``. No pickled members, ever. For a dataset with localized annotations (boxes
or masks, e.g. the synthetic corpus's drawn findings) the ``json`` also carries ``regions``:
each annotation's finding, box on the 512² image and mask run lengths (pipeline/localized/),
``[]`` for an image without any; other datasets' samples are unchanged.

Shards hold what the task files hold: the pairs stage decides which image stands for each task
record (``pairs.unit``: for MIMIC-CXR one record per study, its first image — MedViLL's 91,685
pairs — else one per image), and only those images are written. Every other image becomes a
reject row naming the record it belongs to, so pretraining sees exactly the pairs the
fine-tuning files and the IRM negatives are built from.

Tars are reproducible: samples sorted by key, members sorted by extension (webdataset's
writer), fixed mtime/owner/mode, so a rerun gives byte-identical shards and DVC sees no change.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datasets import ANNOTATIONS_FILE
from pipeline.localized.stage import LOCALIZED_COLUMNS
from pipeline.members import MEMBERS_FILE, write_member_index
from pipeline.outputs import replace_dir, staging_dir
from pipeline.parallel import parallel_map
from pipeline.params import DatasetPaths
from pipeline.records import (
    CHEXPERT_LABELS,
    read_parquet,
    sample_key,
    write_json,
)
from pipeline.splits import SPLITS
from pipeline.stage import StageRun

SHARD_PATTERN = "shard-{index:06d}.tar"
#: Fixed tar member metadata (2000-01-01T00:00:00Z) for reproducible bytes.
TAR_MTIME = 946684800.0
TAR_OWNER = "medvill"


def _label_value(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def sample_metadata(
    row: Mapping[str, Any], regions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``json`` member of one sample (``regions`` only for datasets with annotations)."""
    meta = {
        "dataset": str(row["dataset"]),
        "image_id": str(row["image_id"]),
        "task_id": str(row["task_id"]),
        "patient_id": str(row["patient_id"]),
        "study_id": str(row["study_id"]),
        "view": str(row["view"]),
        "split": str(row["split"]),
        "section": str(row["chosen_section"]),
        "findings": str(row["findings"]),
        "impression": str(row["impression"]),
        # the sections stage's split of the chosen text (``txt``), for sentence-level models
        "sentences": json.loads(str(row["sentences_json"])),
        "synthetic_report": bool(row["synthetic_report"]),
        "labels": [_label_value(float(row[label])) for label in CHEXPERT_LABELS],
    }
    if regions is not None:
        meta["regions"] = regions
    return meta


def localized_regions(paths: DatasetPaths) -> dict[str, list[dict[str, Any]]] | None:
    """Image id → its placed annotations (localized stage), or None for a dataset that has no
    annotations at all. A dataset with annotations whose localized stage has not run stops
    here rather than writing shards that silently lack them."""
    annotations_path = paths.stage_dir("ingest") / ANNOTATIONS_FILE
    if not annotations_path.is_file() or read_parquet(annotations_path).empty:
        return None
    source = paths.stage_dir("localized") / "records.parquet"
    if not source.is_file():
        raise FileNotFoundError(
            f"{source} does not exist: {paths.name} has localized annotations; run "
            f"`medvill-prep localized --dataset {paths.name}` before the shards stage."
        )
    table = read_parquet(source, LOCALIZED_COLUMNS)
    regions: dict[str, list[dict[str, Any]]] = {}
    for row in table.itertuples(index=False):
        regions.setdefault(str(row.image_id), []).append(
            {
                "finding": str(row.finding),
                "box": [float(row.x_min), float(row.y_min), float(row.x_max), float(row.y_max)],
                "mask": str(row.mask_rle),
            }
        )
    return regions


def encode_sample(
    row: Mapping[str, Any],
    image_dir: Path,
    regions: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """One WebDataset sample dict with bytes members only."""
    image_path = image_dir / str(row["image_file"])
    extension = image_path.suffix.lstrip(".").lower()
    own = None if regions is None else regions.get(str(row["image_id"]), [])
    meta = json.dumps(sample_metadata(row, own), sort_keys=True, ensure_ascii=False)
    return {
        "__key__": str(row["key"]),
        extension: image_path.read_bytes(),
        "txt": str(row["chosen_text"]).encode("utf-8"),
        "json": meta.encode("utf-8"),
    }


def write_shard(samples: list[dict[str, Any]], path: Path) -> None:
    """Write one tar atomically (temporary file + rename).

    Members are written as webdataset's ``TarWriter`` writes them — stream mode, one
    ``<key>.<ext>`` member per extension in sorted order, mode 0444, owner medvill, fixed
    mtime — with the standard library alone: importing webdataset imports torch (≈ 0.5 GB in
    every process), and ``pipeline/`` never imports torch.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            for sample in samples:
                for extension in sorted(sample):
                    if extension.startswith("_"):  # __key__ and other metadata
                        continue
                    data = sample[extension]
                    member = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                    member.size = len(data)
                    member.mtime = TAR_MTIME
                    member.mode = 0o444
                    member.uname = member.gname = TAR_OWNER
                    tar.addfile(member, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Split-table columns a sample is written from (raw report, sections JSON and metadata are
#: not read: at MIMIC-CXR scale they are most of the table's bytes).
SAMPLE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "image_id",
    "patient_id",
    "study_id",
    "view",
    "image_path",
    "split",
    "chosen_section",
    "chosen_text",
    "sentences_json",
    "findings",
    "impression",
    "synthetic_report",
    *CHEXPERT_LABELS,
)
#: What the forked shard writers read: set just before the pool starts, so each worker
#: inherits the sample table instead of receiving its rows through a pipe.
_WORKER_INPUT: dict[str, Any] = {}


@dataclass(frozen=True)
class ShardJob:
    """One tar to write: its path under the staging folder and its rows [start, stop)."""

    relative: str
    start: int
    stop: int


def write_job(job: ShardJob) -> int:
    """Worker: encode rows [start, stop) of the sample table into one tar; returns the count.

    Encoding reads every image file of the shard, which is most of the stage's time, so the
    shards are written on ``--workers`` processes; each tar's bytes depend only on its rows.
    """
    rows = _WORKER_INPUT["rows"].iloc[job.start : job.stop]
    image_dir, staging = _WORKER_INPUT["image_dir"], _WORKER_INPUT["staging"]
    regions = _WORKER_INPUT["regions"]
    samples = [encode_sample(row, image_dir, regions) for row in rows.to_dict("records")]
    write_shard(samples, staging / job.relative)
    return len(samples)


def task_images(merged: pd.DataFrame, paths: DatasetPaths, run: StageRun) -> pd.DataFrame:
    """Keep the images that stand for a task record in ``<interim>/pairs/records.parquet``.

    Reject codes: ``not_paired`` (the pairs stage rejected the image, e.g. empty text) and
    ``not_task_image`` (another image of the same task record — the study — was chosen).
    """
    pairs_source = paths.stage_dir("pairs") / "records.parquet"
    pairs = read_parquet(pairs_source, ("image_id", "task_id", "representative"))
    task_of = dict(zip(pairs["image_id"].astype(str), pairs["task_id"].astype(str), strict=True))
    chosen = pairs.loc[pairs["representative"].astype(bool)]
    image_of_task = dict(
        zip(chosen["task_id"].astype(str), chosen["image_id"].astype(str), strict=True)
    )
    keep: list[bool] = []
    for image_id, image_path in zip(merged["image_id"], merged["image_path"], strict=True):
        task = task_of.get(str(image_id))
        if task is None:
            run.reject(
                image_id,
                "not_paired",
                f"{image_path}: not in the task files (rejected by the pairs stage, see "
                f"{paths.stage_dir('pairs') / 'rejects.parquet'})",
            )
        elif image_of_task[task] != str(image_id):
            run.reject(
                image_id,
                "not_task_image",
                f"{image_path}: task record {task} is image {image_of_task[task]} "
                "(pairs.unit: study keeps each study's first image, as MedViLL)",
            )
        keep.append(task is not None and image_of_task[task] == str(image_id))
    kept = merged.loc[pd.Series(keep, index=merged.index, dtype=bool)].copy()
    kept["task_id"] = [task_of[str(i)] for i in kept["image_id"]]
    return kept


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Write ``<shards>/<split>/shard-*.tar``, ``<shards>/members.parquet`` (where every
    member is: loaders seek from it instead of scanning tar headers) and ``index.json``."""
    per_shard = int(params.get("shards", {}).get("samples_per_shard", 1000))
    if per_shard < 1:
        raise ValueError("shards.samples_per_shard must be ≥ 1")
    split_source = paths.stage_dir("split") / "records.parquet"
    image_source = paths.stage_dir("images") / "records.parquet"
    records = read_parquet(split_source, SAMPLE_COLUMNS)
    images = read_parquet(image_source, ("image_id", "image_file"))

    run = StageRun("shards", paths.name, paths.stage_dir("shards"))
    run.n_in = len(records)
    # text columns are Arrow-backed: every filter or sort copies their bytes, so each frame
    # is dropped as soon as the next one exists (measured: ~2.4 kB per image otherwise)
    merged = records.merge(images[["image_id", "image_file"]], on="image_id", how="left")
    del records, images
    missing = merged["image_file"].isna()
    for image_id, image_path in zip(
        merged.loc[missing, "image_id"], merged.loc[missing, "image_path"], strict=True
    ):
        run.reject(
            image_id,
            "no_image",
            f"{image_path}: no processed image (rejected by the images stage, see "
            f"{paths.stage_dir('images') / 'rejects.parquet'})",
        )
    merged = task_images(merged[~missing], paths, run)
    merged["key"] = [
        sample_key(d, i) for d, i in zip(merged["dataset"], merged["image_id"], strict=True)
    ]
    merged = merged.sort_values(["key", "image_id"], kind="stable").reset_index(drop=True)
    repeated = merged["key"].duplicated()
    for image_id, key in zip(
        merged.loc[repeated, "image_id"], merged.loc[repeated, "key"], strict=True
    ):
        run.reject(image_id, "duplicate_key", f"image {image_id}: sample key {key} already used")
    merged = merged[~repeated].reset_index(drop=True)
    regions = localized_regions(paths)

    # built in a fresh folder and swapped in whole: an interrupted run never leaves a mix of
    # old and new shards (or an index that counts other tars) for a training job to read
    staging = staging_dir(paths.shards)
    index: dict[str, Any] = {"dataset": paths.name, "splits": {}, "total": 0}
    shard_of_key: dict[str, str] = {}
    image_dir = paths.stage_dir("images")
    # each split's rows, in key order, one split after the other: a shard is a range of rows
    split_rows = {
        split: np.flatnonzero((merged["split"] == split).to_numpy(dtype=bool, na_value=False))
        for split in SPLITS
    }
    by_split = merged.iloc[np.concatenate(list(split_rows.values()))].reset_index(drop=True)
    by_split = by_split[[*SAMPLE_COLUMNS, "key", "task_id", "image_file"]]
    manifest = merged[["key", "image_id", "split"]].copy()
    del merged
    jobs: list[ShardJob] = []
    offset = 0
    for split in SPLITS:
        total = len(split_rows[split])
        for number, start in enumerate(range(offset, offset + total, per_shard)):
            stop = min(start + per_shard, offset + total)
            relative = f"{split}/{SHARD_PATTERN.format(index=number)}"
            jobs.append(ShardJob(relative, start, stop))
            shard_of_key.update(dict.fromkeys(by_split["key"].iloc[start:stop], relative))
        index["splits"][split] = {"shards": [], "total": total}
        index["total"] += total
        offset += total
    _WORKER_INPUT["rows"] = by_split
    _WORKER_INPUT["image_dir"] = image_dir
    _WORKER_INPUT["staging"] = staging
    _WORKER_INPUT["regions"] = regions
    try:
        counts = parallel_map(write_job, jobs, workers, "shards", chunksize=1)
        for job, count in zip(jobs, counts, strict=True):
            split = job.relative.split("/", 1)[0]
            index["splits"][split]["shards"].append({"file": job.relative, "samples": count})
    finally:
        _WORKER_INPUT.clear()
    del by_split
    all_shards = [s["file"] for split in SPLITS for s in index["splits"][split]["shards"]]
    write_member_index(staging, all_shards)
    index["members"] = MEMBERS_FILE
    write_json(index, staging / "index.json")
    replace_dir(staging, paths.shards)

    manifest["shard"] = manifest["key"].map(shard_of_key).astype("string")
    run.extra["shards"] = {s: len(index["splits"][s]["shards"]) for s in SPLITS}
    run.extra["samples"] = {s: index["splits"][s]["total"] for s in SPLITS}
    if regions is not None:
        run.extra["samples_with_regions"] = int(
            manifest["image_id"].astype(str).isin(regions).sum()
        )
    return run.finish(manifest)
