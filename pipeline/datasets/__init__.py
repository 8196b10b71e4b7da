"""The ingest stage: a dataset adapter turns a raw tree into one record per image.

Adapters (one module per source: ``sample``, ``mimic_cxr``, ``openi``, ``synthetic`` and the
detection / segmentation datasets of ``LOCALIZED_ADAPTERS``) only know their own layout. Checks
that apply to every dataset live here: duplicate image ids, images that do not exist on disk,
and the view filter. Each produces a reject row naming the file. Boxes and masks an adapter
found are written as they are to ``annotations.parquet`` (source pixels); the localized stage
checks and places them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tables
from pipeline.datasets.common import AdapterResult, LayoutError
from pipeline.localized.annotations import annotations_frame
from pipeline.params import DatasetPaths, dataset_entries
from pipeline.rawfiles import UNREADABLE, RawInputError, resolve_under
from pipeline.records import INGEST_COLUMNS, write_parquet
from pipeline.stage import StageRun
from pipeline.tables import FrameWriter

#: Detection / segmentation datasets: images with boxes or masks and no reports. Only the
#: ingest, images and localized stages apply to them.
LOCALIZED_ADAPTERS = ("rsna_pneumonia", "siim_pneumothorax", "nih_boxes", "object_cxr")
ADAPTERS = ("sample", "mimic_cxr", "openi", "synthetic", *LOCALIZED_ADAPTERS)
#: Annotations (boxes, masks) the adapter found, in source pixels; the localized stage reads it.
ANNOTATIONS_FILE = "annotations.parquet"
#: File name suffixes counted as images when looking for files the metadata never lists.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".dcm", ".dicom"})
#: How many unlisted image paths stats.json shows as examples.
UNLISTED_EXAMPLES = 5

__all__ = ["ADAPTERS", "LOCALIZED_ADAPTERS", "LayoutError", "read_adapter", "run_stage"]


def read_adapter(adapter: str, raw: Path, params: dict[str, Any]) -> AdapterResult:
    """Run adapter ``adapter`` (module ``pipeline.datasets.<adapter>``) on ``raw``."""
    if adapter not in ADAPTERS:
        raise ValueError(
            f"unknown dataset adapter '{adapter}'; choose one of {', '.join(ADAPTERS)}"
        )
    if not raw.is_dir():
        raise LayoutError(f"raw dataset root not found: {raw}")
    module = importlib.import_module(f"pipeline.datasets.{adapter}")
    return module.read_dataset(raw, params)


def image_problem(raw: Path, image_path: str) -> tuple[str, str] | None:
    """``(code, reason)`` when a record's image cannot be used, else None.

    The path must stay inside the raw root (symlinks too) and be a regular file; a folder or
    FIFO at the path is named as such rather than reported as missing.
    """
    try:
        path = resolve_under(raw, image_path)
    except RawInputError as error:
        return error.code, f"{raw / image_path}: {error.message}"
    if path.is_file():
        return None
    if path.exists():
        kind = "a folder" if path.is_dir() else "not a regular file (FIFO, socket or device)"
        return UNREADABLE, f"{path}: cannot read: {kind}"
    return "image_missing", f"{path}: image file not found"


def unlisted_images(raw: Path, listed: set[str]) -> list[str]:
    """Image files under ``raw`` that no metadata row names (relative POSIX paths, sorted).

    A user who copied 1,000 JPGs next to a manifest that lists 40 should see that 960 were
    never used. Symlinked folders are not followed (they may lead outside the root); a file
    that a listed symlink inside the root points to counts as listed.
    """
    listed = {os.path.normpath(path) for path in listed}
    real_root = raw.resolve()
    for path in list(listed):  # an image reached through a symlink inside the root is used
        if (raw / path).is_symlink():
            target = (raw / path).resolve()
            if target.is_relative_to(real_root):
                listed.add(os.path.normpath(target.relative_to(real_root)))
    found = []
    for folder, dirs, files in os.walk(raw):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                relative = (Path(folder) / name).relative_to(raw).as_posix()
                if os.path.normpath(relative) not in listed:
                    found.append(relative)
    return sorted(found)


def dataset_views(params: dict[str, Any], name: str) -> list[str]:
    """Views kept for dataset ``name``: its own ``views`` entry in ``datasets`` if it has one
    (Open-I XML gives no per-image view, so it needs ``views: []``), else ``ingest.views``.
    An empty list keeps every view. Detection / segmentation datasets keep every view unless
    their entry says otherwise: their evaluation sets are defined whole, and Object-CXR gives
    no view at all."""
    entry = dataset_entries(params).get(name, {})
    if "views" in entry:
        return list(entry["views"] or [])
    if entry.get("adapter") in LOCALIZED_ADAPTERS:
        return []
    return list(params.get("ingest", {}).get("views", []))


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Ingest ``paths.raw`` into ``<interim>/ingest/records.parquet``.

    Records are checked in image-id order and written in batches (:mod:`pipeline.tables`);
    each adapter record is dropped once its batch is written, so the adapter's list is the
    only full copy held.
    """
    run = StageRun("ingest", paths.name, paths.stage_dir("ingest"))
    result = read_adapter(paths.adapter, paths.raw, params)
    run.n_in = len(result.records) + len(result.rejects)
    run.reject_many(result.rejects)
    views = {v.upper() for v in dataset_views(params, paths.name)}
    listed = {r["image_path"] for r in result.records} | result.listed_paths
    ordered: list[dict[str, Any] | None] = sorted(
        result.records, key=lambda r: (r["image_id"], r["image_path"])
    )
    result.records.clear()

    seen: dict[str, str] = {}
    synthetic = 0
    with FrameWriter(paths.stage_dir("ingest") / "records.parquet") as writer:
        for start in range(0, max(len(ordered), 1), tables.BATCH_ROWS):
            kept: list[dict[str, Any]] = []
            for index in range(start, min(start + tables.BATCH_ROWS, len(ordered))):
                record, ordered[index] = ordered[index], None  # freed once written
                if record is not None and _keep(record, paths, views, seen, run):
                    kept.append(
                        {column: record[column] for column in INGEST_COLUMNS}
                        | {"dataset": paths.name}
                    )
            frame = ingest_frame(kept)
            synthetic += int(frame["synthetic_report"].sum())
            writer.write(frame)

    unlisted = unlisted_images(paths.raw, listed)
    run.extra["views"] = sorted(views)
    run.extra["synthetic_reports"] = synthetic
    run.extra["unlisted_files"] = len(unlisted)
    run.extra["unlisted_examples"] = unlisted[:UNLISTED_EXAMPLES]
    annotations = annotations_frame(result.annotations)
    write_parquet(annotations, paths.stage_dir("ingest") / ANNOTATIONS_FILE)
    run.extra["annotations"] = len(annotations)
    return run.finish_streamed(writer.rows)


def _keep(
    record: dict[str, Any],
    paths: DatasetPaths,
    views: set[str],
    seen: dict[str, str],
    run: StageRun,
) -> bool:
    """Whether ``record`` is kept; a duplicate id, an unusable image or a filtered view
    becomes a reject of ``run``."""
    image_id, image_path = record["image_id"], record["image_path"]
    if image_id in seen:
        run.reject(
            image_id,
            "duplicate_image_id",
            f"{image_path}: image id {image_id} already used by {seen[image_id]}",
        )
        return False
    seen[image_id] = image_path
    problem = image_problem(paths.raw, image_path)
    if problem is not None:
        run.reject(image_id, *problem)
        return False
    if views and record["view"].upper() not in views:
        run.reject(
            image_id,
            "view_filtered",
            f"{image_path}: view '{record['view'] or 'unknown'}' not in ingest.views "
            f"{sorted(views)}",
        )
        return False
    return True


def ingest_frame(kept: list[dict[str, Any]]) -> pd.DataFrame:
    """Kept records as the ingest table: ``INGEST_COLUMNS``, strings and one bool column."""
    frame = pd.DataFrame(kept, columns=list(INGEST_COLUMNS))
    frame = frame.astype({c: "string" for c in INGEST_COLUMNS if c != "synthetic_report"})
    frame["synthetic_report"] = frame["synthetic_report"].astype(bool)
    return frame
