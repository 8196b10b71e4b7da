"""mAP and Dice against values worked out by hand, and their bootstrap weights."""

from __future__ import annotations

import numpy as np
import pytest

from medvill.localized.scores import (
    ImageBoxes,
    box_iou,
    detection_compute,
    dice_per_image,
    mean_average_precision,
    segmentation_compute,
)


def image(gt, gt_labels, boxes=(), scores=(), labels=()) -> ImageBoxes:
    return ImageBoxes(
        gt_boxes=np.array(gt, dtype=float).reshape(-1, 4),
        gt_labels=np.array(gt_labels, dtype=int),
        boxes=np.array(boxes, dtype=float).reshape(-1, 4),
        scores=np.array(scores, dtype=float),
        labels=np.array(labels, dtype=int),
    )


def test_box_iou_by_hand() -> None:
    iou = box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]))
    # overlap 1 px², union 4 + 4 − 1
    assert iou == pytest.approx(np.array([[1 / 7, 1.0, 0.0]]))


def test_ap_of_a_ranked_list_by_hand() -> None:
    """Two boxes; detections ranked TP (0.9), FP (0.8), TP (0.7): precision 1, ½, ⅔ at recall
    ½, ½, 1 — made monotone: 1 up to recall ½, ⅔ above. COCO's 101 points: 51 read 1
    (0, 0.01 … 0.50), 50 read ⅔."""
    images = [
        image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 1]),
        image([[0, 0, 10, 10]], [1], [[1, 0, 10, 10]], [0.7], [1]),
    ]
    assert mean_average_precision(images) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_thresholds_duplicates_missing_classes() -> None:
    # IoU 0.81 (a 10×10 box shifted by 1 px, 90/110 ... ) is a hit at 0.5, a miss at 0.9
    shifted = image([[0, 0, 10, 10]], [1], [[1, 0, 11, 10]], [0.5], [1])
    iou = box_iou(np.array([[1, 0, 11, 10]]), np.array([[0, 0, 10, 10]]))[0, 0]
    assert iou == pytest.approx(90 / 110)
    compute = detection_compute([shifted], (0.5, 0.9))
    values = {k: float(v[0]) for k, v in compute(np.ones((1, 1))).items()}
    assert values == {"map@0.5": 1.0, "map@0.9": 0.0, "map": 0.5}
    # a second detection of the same box is a false positive after the first took it
    twice = image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])
    assert mean_average_precision([twice]) == pytest.approx(1.0)  # FP after full recall
    twice_low_first = image(
        [[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8],
        [1, 1],
    )  # fmt: skip
    # recall ½ at precision 1, then a duplicate (FP); the second box is never found
    assert mean_average_precision([twice_low_first]) == pytest.approx(51 / 101)
    # class 2 has boxes but no detection (AP 0); class 3 is only predicted (not counted)
    mixed = image(
        [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2], [[0, 0, 10, 10], [40, 40, 50, 50]],
        [0.9, 0.9], [1, 3],
    )  # fmt: skip
    assert mean_average_precision([mixed]) == pytest.approx(0.5)
    # a detection of the wrong class does not match
    wrong = image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [0.9], [2])
    assert mean_average_precision([wrong]) == 0.0


def test_max_detections_keeps_the_best_scores() -> None:
    item = image([[0, 0, 10, 10]], [1], [[40, 40, 50, 50], [0, 0, 10, 10]], [0.9, 0.1], [1, 1])
    assert mean_average_precision([item], max_detections=1) == 0.0
    assert mean_average_precision([item], max_detections=2) == pytest.approx(
        (51 * 0.5 + 50 * 0.5) / 101
    )


def test_bootstrap_weights_equal_repeating_images() -> None:
    first = image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10], [30, 30, 40, 40]], [0.6, 0.9], [1, 1])
    second = image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [0.8], [1])
    weights = np.array([[1, 1], [2, 0], [0, 3], [3, 1]], dtype=float)
    drawn = detection_compute([first, second])(weights)["map"]
    for row, value in zip(weights, drawn, strict=True):
        repeated = [first] * int(row[0]) + [second] * int(row[1])
        assert value == pytest.approx(mean_average_precision(repeated))


def test_no_box_in_a_resample_is_nan() -> None:
    empty = image([], [], [[0, 0, 5, 5]], [0.5], [1])
    boxed = image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [0.9], [1])
    values = detection_compute([empty, boxed])(np.array([[2.0, 0.0], [1.0, 1.0]]))["map"]
    assert np.isnan(values[0]) and values[1] == pytest.approx(1.0)


def test_dice_by_hand() -> None:
    p = np.zeros((4, 4), bool)
    t = np.zeros((4, 4), bool)
    p[0, :4] = True  # 4 pixels
    t[0, 2:4] = True
    t[1, 2:4] = True  # 4 pixels, 2 shared
    assert dice_per_image(p, t) == pytest.approx(2 * 2 / 8)
    assert dice_per_image(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert dice_per_image(p, np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_image(p, np.zeros((2, 2)))
    compute = segmentation_compute([0.5, 1.0, 0.0])
    values = compute(np.array([[1, 1, 1], [2, 0, 1], [0, 3, 0]], dtype=float))["dice"]
    assert values == pytest.approx([0.5, 1 / 3, 1.0])


def test_max_detections_counts_per_class_as_coco() -> None:
    """COCO keeps the top detections of each image *and class*: a higher-scored box of another
    class does not push this class's box out."""
    item = image([[0, 0, 10, 10]], [1], [[40, 40, 50, 50], [0, 0, 10, 10]], [0.9, 0.1], [2, 1])
    assert mean_average_precision([item], max_detections=1) == pytest.approx(1.0)
