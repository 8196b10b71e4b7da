"""Detection mAP and segmentation Dice, written so that the bootstrap can resample test images.

**mAP** follows the COCO evaluation (what torchmetrics' ``MeanAveragePrecision`` and
pycocotools compute), restricted to what localized chest X-ray tasks use: boxes in continuous
pixel coordinates (area = width × height), the top ``max_detections`` boxes of each image and
class, each detection — in descending score — matched to the unmatched ground-truth box of its
image and class with the highest IoU at or above the threshold; per class, precision made monotone
from the right and read at the 101 recall points 0, 0.01, …, 1 (a point past the last recall
reads 0). AP is averaged over IoU thresholds and over the classes that have a ground-truth box
in the test set (a class with boxes but no detection scores 0).

**Dice** is per image, ``2|P ∩ T| / (|P| + |T|)`` of the thresholded prediction ``P`` and the
union of the image's masks ``T``; an image where both are empty scores 1 (a correct "no
pneumothorax"), and the dataset's Dice is the mean over images.

Both take bootstrap weights: a (R, n) matrix of how often each test image was drawn
(:func:`medvill.metrics.bootstrap`'s ``Compute``), so one pass scores every resample; the
matching of detections to boxes does not depend on the weights (a redrawn image is the same
image), only the counts do.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvill.metrics import Compute

#: COCO's recall points.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), as (N, M); boxes are
    ``x_min, y_min, x_max, y_max`` in continuous coordinates."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (right - left).clip(0) * (bottom - top).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True)
class ImageBoxes:
    """One test image: its ground truth and the detector's output (output pixels)."""

    gt_boxes: np.ndarray  # (G, 4)
    gt_labels: np.ndarray  # (G,)
    boxes: np.ndarray  # (D, 4)
    scores: np.ndarray  # (D,)
    labels: np.ndarray  # (D,)


@dataclass(frozen=True)
class _ClassMatches:
    """One class at one IoU threshold: its detections in global score order, whether each is
    a true positive, the image it belongs to, and each image's number of boxes."""

    image: np.ndarray
    true_positive: np.ndarray
    gt_per_image: np.ndarray


def _match_image(
    gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float
) -> np.ndarray:
    """True positive flags of one image's detections of one class (in the order given)."""
    flags = np.zeros(len(boxes), dtype=bool)
    if len(gt) == 0 or len(boxes) == 0:
        return flags
    ious = box_iou(boxes, gt)
    taken = np.zeros(len(gt), dtype=bool)
    for d in np.argsort(-scores, kind="mergesort"):
        candidates = np.where(taken, -1.0, ious[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= threshold:
            taken[best] = True
            flags[d] = True
    return flags


def _class_matches(
    images: Sequence[ImageBoxes], label: int, threshold: float, max_detections: int
) -> _ClassMatches:
    scores: list[np.ndarray] = []
    image_of: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    gt_counts = np.zeros(len(images), dtype=np.float64)
    for i, item in enumerate(images):
        gt = np.asarray(item.gt_boxes, dtype=np.float64).reshape(-1, 4)[item.gt_labels == label]
        gt_counts[i] = len(gt)
        order = np.argsort(-np.asarray(item.scores), kind="mergesort")
        keep = order[np.asarray(item.labels)[order] == label][:max_detections]
        boxes = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)[keep]
        own = np.asarray(item.scores, dtype=np.float64)[keep]
        scores.append(own)
        image_of.append(np.full(len(own), i))
        flags.append(_match_image(gt, boxes, own, threshold))
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-all_scores, kind="mergesort")
    return _ClassMatches(
        image=np.concatenate(image_of).astype(np.int64)[order] if scores else np.zeros(0, int),
        true_positive=np.concatenate(flags)[order] if flags else np.zeros(0, bool),
        gt_per_image=gt_counts,
    )


def _average_precision(matches: _ClassMatches, weights: np.ndarray) -> np.ndarray:
    """COCO's 101-point AP of one class for each row of ``weights`` (R, n): (R,); NaN for a
    resample without any box of the class."""
    positives = weights @ matches.gt_per_image  # (R,)
    if matches.image.size == 0:
        return np.where(positives > 0, 0.0, np.nan)
    drawn = weights[:, matches.image]  # (R, D)
    tp = np.cumsum(drawn * matches.true_positive, axis=1)
    fp = np.cumsum(drawn * ~matches.true_positive, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / positives[:, None]
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
    # monotone from the right: the best precision at this recall or any higher one
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    first = (recall[:, :, None] < RECALL_POINTS[None, None, :] - 1e-12).sum(axis=1)  # (R, 101)
    padded = np.concatenate([envelope, np.zeros((len(weights), 1))], axis=1)
    read = np.take_along_axis(padded, first, axis=1)
    return np.where(positives > 0, read.mean(axis=1), np.nan)


def detection_compute(
    images: Sequence[ImageBoxes],
    iou_thresholds: Sequence[float] = (0.5,),
    max_detections: int = 100,
) -> Compute:
    """The bootstrap ``Compute`` of mAP over ``images``: weights (R, n) → ``{"map": (R,),
    "map@<t>": (R,) per threshold}``."""
    labels = sorted({int(x) for item in images for x in np.asarray(item.gt_labels)})
    table = {
        (label, t): _class_matches(images, label, t, max_detections)
        for label in labels
        for t in iou_thresholds
    }

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        weights = np.asarray(weights, dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        per_threshold = []
        for t in iou_thresholds:
            if not labels:
                values = np.full(len(weights), np.nan)
            else:
                per_class = np.stack([_average_precision(table[(c, t)], weights) for c in labels])
                with warnings.catch_warnings():
                    # a resample without any box is NaN on purpose (the bootstrap drops it)
                    warnings.simplefilter("ignore", RuntimeWarning)
                    values = np.nanmean(per_class, axis=0)
            out[f"map@{t:g}"] = values
            per_threshold.append(values)
        out["map"] = np.mean(np.stack(per_threshold), axis=0)
        return out

    return compute


def mean_average_precision(
    images: Sequence[ImageBoxes],
    iou_thresholds: Sequence[float] = (0.5,),
    max_detections: int = 100,
) -> float:
    """mAP over all images (the full-set value of :func:`detection_compute`)."""
    compute = detection_compute(images, iou_thresholds, max_detections)
    return float(compute(np.ones((1, len(images))))["map"][0])


def dice_per_image(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks of one image; 1 when both are empty."""
    p = np.asarray(prediction, dtype=bool)
    t = np.asarray(target, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} masks differ in shape")
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def segmentation_compute(per_image_dice: Sequence[float]) -> Compute:
    """The bootstrap ``Compute`` of the mean Dice: weights (R, n) → ``{"dice": (R,)}``."""
    values = np.asarray(per_image_dice, dtype=np.float64)

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        weights = np.asarray(weights, dtype=np.float64)
        return {"dice": (weights @ values) / weights.sum(axis=1)}

    return compute
