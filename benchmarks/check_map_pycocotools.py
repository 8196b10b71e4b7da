"""Cross-check of our mAP (medvill/localized/scores.py) against pycocotools' COCOeval.

pycocotools is not a dependency (it is only needed here): ``pip install pycocotools``. Draws
random detection problems (1–7 images, 0–3 boxes of 2 classes each, detections near the boxes
plus distractors, ties excluded), scores each with both at IoU 0.5 and 0.75 (area range "all",
100 detections per image) and prints the largest difference. Last line:
``map_check: problems=N max_abs_difference=D`` (target: < 1e-9).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvill.localized.scores import ImageBoxes, mean_average_precision


def random_problem(rng: np.random.Generator) -> list[ImageBoxes]:
    images = []
    for _ in range(int(rng.integers(1, 8))):
        n_gt, n_det = int(rng.integers(0, 4)), int(rng.integers(0, 6))

        def boxes(k: int) -> np.ndarray:
            xy = rng.uniform(0, 50, (k, 2))
            return np.concatenate([xy, xy + rng.uniform(5, 30, (k, 2))], axis=1)

        gt = boxes(n_gt)
        near = min(n_gt, n_det)
        det = np.concatenate([gt[:near] + rng.normal(0, 3, (near, 4)), boxes(n_det - near)])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1.0)  # valid boxes only
        images.append(
            ImageBoxes(gt, rng.integers(1, 3, n_gt), det, rng.uniform(0, 1, n_det),
                       rng.integers(1, 3, n_det))
        )  # fmt: skip
    return images


def coco_map(images: list[ImageBoxes], threshold: float) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth: dict = {"images": [{"id": i} for i in range(len(images))],
                   "categories": [{"id": 1}, {"id": 2}], "annotations": []}  # fmt: skip
    detections = []
    for i, item in enumerate(images):
        for box, label in zip(item.gt_boxes, item.gt_labels, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            truth["annotations"].append({
                "id": len(truth["annotations"]) + 1, "image_id": i, "category_id": int(label),
                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
        for box, label, score in zip(item.boxes, item.labels, item.scores, strict=True):
            bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            detections.append(
                {"image_id": i, "category_id": int(label), "score": float(score), "bbox": bbox}
            )
    coco = COCO()
    coco.dataset = truth
    coco.createIndex()
    evaluation = COCOeval(coco, coco.loadRes(detections) if detections else COCO(), "bbox")
    evaluation.params.iouThrs = np.array([threshold])
    evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
    evaluation.params.maxDets = [100]
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, 0]  # (recall points, classes)
    per_class = [precision[:, k].mean() for k in range(precision.shape[1]) if precision[0, k] > -1]
    return float(np.mean(per_class))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import contextlib
    import io

    rng = np.random.default_rng(args.seed)
    worst, count = 0.0, 0
    for _ in range(args.problems):
        images = random_problem(rng)
        if not any(len(i.gt_labels) for i in images) or not any(len(i.labels) for i in images):
            continue
        for threshold in (0.5, 0.75):
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                reference = coco_map(images, threshold)
            worst = max(worst, abs(reference - mean_average_precision(images, (threshold,))))
        count += 1
    print(f"map_check: problems={count} max_abs_difference={worst:.3g}")


if __name__ == "__main__":
    main()
