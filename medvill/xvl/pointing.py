"""The pointing game: does a finding's word look at the finding?

For every region a shard sample carries (the localized annotations in its ``json`` member,
output-image pixels; the synthetic corpus draws them) whose finding has a word in the sample's
report, the word's attention map points at its peak patch; a *hit* is a peak patch whose centre
lies inside the region's box. Chance is the share of patch centres inside the box (where a
random patch would point), averaged the same way, so accuracy and chance compare directly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvill.xvl.attention import compute_maps, peak_cell, word_spans

#: Report words that name each CheXpert observation the annotations use (first found wins).
FINDING_WORDS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly", "heart", "cardiac"),
    "Pleural Effusion": ("effusion", "effusions"),
    "Pneumothorax": ("pneumothorax",),
    "Lung Lesion": ("nodule", "mass"),
    "Consolidation": ("consolidation", "opacity", "airspace"),
    "Atelectasis": ("atelectasis",),
    "Support Devices": ("tube", "catheter", "pacemaker", "line"),
}


def cell_centres(grid: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y of every patch centre, (grid, grid) each."""
    xs = (np.arange(grid) + 0.5) * width / grid
    ys = (np.arange(grid) + 0.5) * height / grid
    return np.meshgrid(xs, ys)


def inside(box: list[float], x: np.ndarray | float, y: np.ndarray | float) -> Any:
    x_min, y_min, x_max, y_max = box
    return (x >= x_min) & (x <= x_max) & (y >= y_min) & (y <= y_max)


def point(grid_map: np.ndarray, box: list[float], width: int, height: int) -> tuple[bool, float]:
    """(hit, chance) of one map against one box on a ``width`` × ``height`` image."""
    xs, ys = cell_centres(grid_map.shape[0], width, height)
    row, column = peak_cell(grid_map)
    chance = float(inside(box, xs, ys).mean())
    return bool(inside(box, xs[row, column], ys[row, column])), chance


def pointing_game(
    checkpoint: Path, index_path: Path, split: str = "test", limit: int = 0
) -> dict[str, Any]:
    """Score the cross-attention and Grad-CAM maps of every usable region of ``split``
    (``limit`` samples at most, 0 = all); per finding and overall: trials, hits, accuracy,
    chance."""
    from medvill.data import SAMPLE_MEMBERS, decode_image, log_and_continue, read_index
    from medvill.shardreader import MemberReader, sample_refs
    from medvill.xvl.visualize import load_checkpoint

    model, tokenizer = load_checkpoint(checkpoint)
    shards = read_index(index_path, split)
    tallies: dict[str, dict[str, float]] = {}
    seen = 0
    with MemberReader(SAMPLE_MEMBERS) as reader:
        for ref in sample_refs(shards.files, log_and_continue, shards.contents()):
            if limit and seen >= limit:
                break
            sample = reader.read(ref)
            member = "jpg" if "jpg" in sample else "png"
            regions = json.loads(sample.get("json", b"{}")).get("regions") or []
            if member not in sample or "txt" not in sample or not regions:
                continue
            seen += 1
            ids, words = word_spans(tokenizer, sample["txt"].decode("utf-8"),
                                    model.config.max_text_tokens)  # fmt: skip
            wanted = []
            for region in regions:
                names = FINDING_WORDS.get(region["finding"], ())
                match = next((w for n in names for w in words if w.text.lower() == n), None)
                if match is not None:
                    wanted.append((region, match))
            if not wanted:
                continue
            with Image.open(io.BytesIO(sample[member])) as img:
                width, height = img.size
            image = decode_image(sample[member], model.config.image_size, None)
            maps = compute_maps(model, image, ids, [w for _, w in wanted])
            for (region, _), cross, cam in zip(wanted, maps.cross, maps.gradcam, strict=True):
                for finding in (region["finding"], "all"):
                    tally = tallies.setdefault(
                        finding, {"trials": 0, "hits": 0.0, "gradcam_hits": 0.0, "chance": 0.0}
                    )
                    hit, chance = point(cross, region["box"], width, height)
                    cam_hit, _ = point(cam, region["box"], width, height)
                    tally["trials"] += 1
                    tally["hits"] += hit
                    tally["gradcam_hits"] += cam_hit
                    tally["chance"] += chance
    result: dict[str, Any] = {"samples_with_regions": seen, "split": split}
    for finding, t in sorted(tallies.items()):
        n = max(t["trials"], 1)
        result[finding] = {
            "trials": int(t["trials"]),
            "accuracy": t["hits"] / n,
            "gradcam_accuracy": t["gradcam_hits"] / n,
            "chance": t["chance"] / n,
        }
    return result
