"""The ``localized`` stage: annotations in source pixels → boxes and masks on the output image.

Reads ``ingest/annotations.parquet`` (written by the dataset's adapter), ``ingest`` records and
rejects, and the ``images`` stage's records (their geometry columns), and writes
``localized/records.parquet``: one row per annotation, box in output pixels and, for masks and
drawn shapes, the mask as row-major run lengths on the ``output_size²`` image
(docs/formats.md §13), and ``annotations_montage.png`` (a DVC plot: the first annotated
images with their boxes and masks drawn on them). The unit is the annotation: in =
annotations, out + rejected = in. Datasets without annotations (the demo, MIMIC-CXR) get an
empty table.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.images import ImageSettings
from pipeline.localized.annotations import ANNOTATION_COLUMNS, SHAPES
from pipeline.localized.geometry import (
    BAD_SHAPE,
    AnnotationError,
    Geometry,
    box_to_output,
    ellipse_to_output,
    mask_box,
    mask_to_output,
    polygon_to_output,
)
from pipeline.localized.montage import MONTAGE_IMAGES, AnnotatedImage, render_annotations
from pipeline.localized.rle import RleError, decode_counts, decode_siim, encode_counts
from pipeline.params import DatasetPaths
from pipeline.records import atomic_write_bytes, read_parquet, require_columns
from pipeline.stage import StageRun

STAGE = "localized"
ANNOTATIONS_FILE = "annotations.parquet"
MONTAGE_FILE = "annotations_montage.png"
#: The images stage's columns this stage needs.
GEOMETRY_COLUMNS: tuple[str, ...] = (
    "image_id",
    "image_file",
    "source_width",
    "source_height",
    "crop_left",
    "crop_top",
    "crop_right",
    "crop_bottom",
    "content_width",
    "content_height",
    "pad_left",
    "pad_top",
)
#: Columns of ``localized/records.parquet``, in order.
LOCALIZED_COLUMNS: tuple[str, ...] = (
    "dataset",
    "image_id",
    "annotation_id",
    "finding",
    "shape",
    "x_min",  # box on the output image, continuous pixel edges (pixel i covers [i, i+1))
    "y_min",
    "x_max",
    "y_max",
    "mask_rle",  # row-major run lengths on output_size² (background first); "" for boxes
    "mask_pixels",  # pixels on in the mask (0 for boxes)
    "clipped",  # part of the box or mask was cut (outside the source image or the crop)
    "image_file",  # the images stage's output file the box refers to
    "output_size",
)
BAD_RLE = "bad_rle"
UNKNOWN_IMAGE = "unknown_image"
NO_IMAGE = "no_image"
DEFAULT_MASK_THRESHOLD = 0.5


def mask_threshold(params: dict[str, Any]) -> float:
    """``localized.mask_threshold``: share of an output pixel a mask must cover to be on."""
    return float((params.get(STAGE) or {}).get("mask_threshold", DEFAULT_MASK_THRESHOLD))


def place(row: Any, geometry: Geometry, threshold: float) -> dict[str, Any]:
    """One annotation on the output image; raises AnnotationError / RleError for bad ones."""
    shape = str(row.shape)
    coords = [float(v) for v in json.loads(str(row.coords) or "[]")]
    mask: np.ndarray | None = None
    clipped = False
    if shape in ("box", "ellipse"):
        if len(coords) != 4:
            raise AnnotationError(BAD_SHAPE, f"{shape} needs 4 coordinates, got {len(coords)}")
        box, clipped = box_to_output((coords[0], coords[1], coords[2], coords[3]), geometry)
        if shape == "ellipse":
            mask = ellipse_to_output((coords[0], coords[1], coords[2], coords[3]), geometry)
    elif shape == "polygon":
        if len(coords) % 2:
            raise AnnotationError(BAD_SHAPE, f"polygon has an odd number of values ({len(coords)})")
        points = list(zip(coords[0::2], coords[1::2], strict=True))
        mask = polygon_to_output(points, geometry)
        xs, ys = coords[0::2], coords[1::2]
        box, clipped = box_to_output((min(xs), min(ys), max(xs), max(ys)), geometry)
    elif shape in ("siim_rle", "mask_counts"):
        width, height = int(row.rle_width), int(row.rle_height)
        decode = decode_siim if shape == "siim_rle" else decode_counts
        source_mask = decode(str(row.rle), width, height)
        if not source_mask.any():
            raise AnnotationError(BAD_SHAPE, "run lengths describe an empty mask")
        mask = mask_to_output(source_mask, geometry, threshold)
        box = mask_box(mask)
        g = geometry
        kept = source_mask[g.crop_top : g.crop_bottom, g.crop_left : g.crop_right]
        clipped = int(kept.sum()) != int(source_mask.sum())
    else:
        raise AnnotationError(BAD_SHAPE, f"unknown shape {shape!r}; expected one of {SHAPES}")
    return {
        "x_min": box[0],
        "y_min": box[1],
        "x_max": box[2],
        "y_max": box[3],
        "mask_rle": encode_counts(mask) if mask is not None else "",
        "mask_pixels": int(mask.sum()) if mask is not None else 0,
        "clipped": bool(clipped),
    }


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Place every ingested annotation on its output image (see the module docstring)."""
    del workers  # one process: a release's annotations take about a minute at most
    # (benchmarks/bench_localized.py: 17 ms per SIIM mask, well under 1 ms per box)
    threshold = mask_threshold(params)
    output_size = ImageSettings.from_params(params).output_size
    ingest_dir = paths.stage_dir("ingest")
    annotations_path = ingest_dir / ANNOTATIONS_FILE
    if not annotations_path.is_file():
        raise FileNotFoundError(
            f"{annotations_path} does not exist: it was written by an older medvill; "
            f"rerun `medvill-prep ingest --dataset {paths.name}`."
        )
    annotations = read_parquet(annotations_path)
    require_columns(annotations, ANNOTATION_COLUMNS, annotations_path)
    ingest_ids = set(read_parquet(ingest_dir / "records.parquet")["image_id"].astype(str))
    ingest_ids |= set(read_parquet(ingest_dir / "rejects.parquet")["id"].astype(str))
    images_path = paths.stage_dir("images") / "records.parquet"
    images = read_parquet(images_path)
    require_columns(images, GEOMETRY_COLUMNS, images_path)
    geometry = {
        str(row.image_id): (Geometry.from_record(row, output_size), str(row.image_file))
        for row in images.itertuples(index=False)
    }

    run = StageRun(STAGE, paths.name, paths.stage_dir(STAGE))
    run.n_in = len(annotations)
    rows: list[dict[str, Any]] = []
    for row in annotations.itertuples(index=False):
        image_id, annotation_id = str(row.image_id), str(row.annotation_id)
        if row.problem_code:
            run.reject(annotation_id, str(row.problem_code), str(row.problem_reason))
            continue
        if image_id not in geometry:
            if image_id in ingest_ids:
                run.reject(
                    annotation_id,
                    NO_IMAGE,
                    f"{row.source}: image {image_id} was rejected by the ingest or images "
                    "stage (see their rejects.parquet)",
                )
            else:
                run.reject(
                    annotation_id,
                    UNKNOWN_IMAGE,
                    f"{row.source}: image id {image_id} is not an image of the dataset",
                )
            continue
        image_geometry, image_file = geometry[image_id]
        try:
            placed = place(row, image_geometry, threshold)
        except RleError as error:
            run.reject(annotation_id, BAD_RLE, f"{row.source}: {error}")
            continue
        except AnnotationError as error:
            run.reject(annotation_id, error.code, f"{row.source}: {error.message}")
            continue
        rows.append(
            {
                "dataset": paths.name,
                "image_id": image_id,
                "annotation_id": annotation_id,
                "finding": str(row.finding),
                "shape": str(row.shape),
                **placed,
                "image_file": image_file,
                "output_size": output_size,
            }
        )
    frame = localized_frame(rows)
    montage = render_annotations(montage_items(frame, paths))
    atomic_write_bytes(paths.stage_dir(STAGE) / MONTAGE_FILE, montage)
    run.extra.update(
        {
            "images_with_annotations": int(frame["image_id"].nunique()),
            "masks": int((frame["mask_pixels"] > 0).sum()),
            "clipped": int(frame["clipped"].sum()),
            "findings": dict(sorted(Counter(frame["finding"]).items())),
            "mask_threshold": threshold,
            "output_size": output_size,
            "unit": "annotations",
        }
    )
    return run.finish(frame)


def montage_items(frame: pd.DataFrame, paths: DatasetPaths) -> list[AnnotatedImage]:
    """The first ``MONTAGE_IMAGES`` annotated images by id, with their boxes and masks."""
    items = []
    for image_id in sorted(frame["image_id"].astype(str).unique())[:MONTAGE_IMAGES]:
        rows = frame[frame["image_id"] == image_id]
        first = rows.iloc[0]
        with Image.open(paths.stage_dir("images") / str(first["image_file"])) as image:
            pixels = np.asarray(image.convert("L"))
        size = int(first["output_size"])
        mask = None
        for encoded in rows["mask_rle"]:
            if encoded:
                one = decode_counts(str(encoded), size, size)
                mask = one if mask is None else mask | one
        boxes = tuple(
            (float(r.x_min), float(r.y_min), float(r.x_max), float(r.y_max))
            for r in rows.itertuples()
        )
        label = f"{image_id}: {', '.join(sorted(set(rows['finding'].astype(str))))}"
        items.append(AnnotatedImage(label, pixels, boxes, mask))
    return items


def localized_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The output table with stable dtypes (an empty one too)."""
    frame = pd.DataFrame(rows, columns=list(LOCALIZED_COLUMNS))
    floats = ("x_min", "y_min", "x_max", "y_max")
    for column in LOCALIZED_COLUMNS:
        if column in floats:
            frame[column] = frame[column].astype("float64")
        elif column in ("mask_pixels", "output_size"):
            frame[column] = frame[column].astype("int64")
        elif column == "clipped":
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = frame[column].astype("string")
    return frame
