"""Where each drawn finding is: the synthetic corpus's boxes and masks (``regions.jsonl``).

The drawing code hands back each finding's extent on its coarse grid (0–1,
pipeline/synthetic/drawing.py); here it is upsampled to the image size the same way the image
is (bilinear) and thresholded at one half, so a mask covers the pixels where the sign is at
least half drawn. One line per frontal image — also for images without findings, which are
the negatives of a localized evaluation — with one region per finding (one per device), the
finding named by its CheXpert observation. Masks are row-major run lengths on the source
image (pipeline/localized/rle.py); the ``synthetic`` adapter turns them into annotations and
the localized stage moves them onto the output image like any dataset's.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image

from pipeline.localized.rle import encode_counts

REGIONS_FILE = "regions.jsonl"
#: Finding kind of the generator → the CheXpert observation it shows.
OBSERVATION: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "nodule": "Lung Lesion",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "device": "Support Devices",
}


def region_masks(extents: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Each coarse extent as a boolean ``size²`` mask (empty ones dropped), sorted by key."""
    masks = {}
    for key in sorted(extents):
        coarse = Image.fromarray(np.asarray(extents[key], dtype=np.float32), mode="F")
        fine = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))
        mask = fine >= 0.5
        if mask.any():
            masks[key] = mask
    return masks


def regions_entry(image_id: str, masks: dict[str, np.ndarray], size: int) -> dict[str, Any]:
    """One ``regions.jsonl`` line: the image and its regions with their source boxes."""
    regions = []
    for key, mask in masks.items():
        kind, _, detail = key.partition(":")
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        regions.append(
            {
                "finding": OBSERVATION[kind],
                "kind": kind,
                "detail": detail,
                "box": [int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)],
                "counts": encode_counts(mask),
            }
        )
    return {"image_id": image_id, "width": size, "height": size, "regions": regions}


def regions_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))
