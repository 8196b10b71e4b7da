"""The annotation table adapters hand to the ingest stage, in source pixels.

One row per drawn region (a box, ellipse, polygon or run-length mask) of one image. Adapters
only translate their release's format into these rows; every check that needs the image
(inside the film? inside the crop?) happens in the localized stage, which knows the images
stage's geometry. A row the adapter could not even parse (a non-numeric coordinate, an unknown
shape code) still becomes a row, with ``problem_code``/``problem_reason`` set, so that the
localized stage's rejects table shows it and its counts reconcile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

#: Columns of ``<interim>/<ds>/ingest/annotations.parquet`` (docs/formats.md §9).
ANNOTATION_COLUMNS: tuple[str, ...] = (
    "image_id",  # the record's image id
    "annotation_id",  # "<image_id>#<n>", n = position among the image's annotations
    "finding",  # what the region shows ("Lung Opacity", "Pneumothorax", "Foreign object", …)
    "shape",  # box | ellipse | polygon | siim_rle | mask_counts
    "coords",  # JSON list: [x_min, y_min, x_max, y_max] (box, ellipse) or [x1, y1, …] (polygon)
    "rle",  # run lengths for siim_rle / mask_counts, else ""
    "rle_width",  # grid the run lengths are written on (0 for geometric shapes)
    "rle_height",
    "source",  # "<file>:<line>" the row came from, for reject reasons
    "problem_code",  # "" or the reject code of a row the adapter could not parse
    "problem_reason",
)
#: Shapes the localized stage understands.
SHAPES: tuple[str, ...] = ("box", "ellipse", "polygon", "siim_rle", "mask_counts")
_INT_COLUMNS = ("rle_width", "rle_height")


def annotation(
    image_id: str,
    index: int,
    finding: str,
    shape: str,
    source: str,
    coords: Sequence[float] = (),
    rle: str = "",
    rle_size: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """One annotation row (``rle_size`` = (width, height) of the run-length grid)."""
    return {
        "image_id": image_id,
        "annotation_id": f"{image_id}#{index}",
        "finding": finding,
        "shape": shape,
        "coords": json.dumps([float(v) for v in coords]),
        "rle": rle,
        "rle_width": int(rle_size[0]),
        "rle_height": int(rle_size[1]),
        "source": source,
        "problem_code": "",
        "problem_reason": "",
    }


def unusable(
    image_id: str, index: int, finding: str, source: str, code: str, reason: str
) -> dict[str, Any]:
    """A row the adapter could not parse; the localized stage rejects it with ``code``."""
    row = annotation(image_id, index, finding, "box", source)
    row.update(problem_code=code, problem_reason=f"{source}: {reason}")
    return row


def annotations_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with stable dtypes, sorted by image and position (stable bytes)."""
    frame = pd.DataFrame(list(rows), columns=list(ANNOTATION_COLUMNS))
    for column in ANNOTATION_COLUMNS:
        frame[column] = frame[column].astype("int64" if column in _INT_COLUMNS else "string")
    order = frame["annotation_id"].str.rsplit("#", n=1).str[-1].astype("int64")
    frame = frame.assign(_n=order).sort_values(["image_id", "_n"], kind="stable")
    return frame.drop(columns="_n").reset_index(drop=True)
