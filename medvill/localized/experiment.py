"""LoVT's localized evaluation protocol: for each initialisation of the ResNet (our pretrained
checkpoint, ImageNet, random), each variant (frozen trunk, fine-tuned), each fraction of the
training images (1 %, 10 %, 100 %) and each seed, train a head and score it on the test split.

A fraction is a seeded subset of the *training images* (negatives included), at least one
image; the same seed gives the same subset and the same head initialisation whatever the
initialisation arm, so the arms differ only in the trunk. The test metric of a cell is the mean
over its seeds; its bootstrap resamples the test images and recomputes every seed's metric on
the same resample (:func:`medvill.metrics.bootstrap`), so the interval covers the test set's
sampling with the seeds averaged, and ``seed_std`` reports the spread between seeds.
The checkpoint's arm is compared with each other arm by a paired bootstrap of the difference on
those same resamples (:func:`compare_to_checkpoint`): that, not whether two cells' intervals
overlap, says whether pretraining helped on this test set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvill import metrics as M
from medvill.localized.backbone import INITS, checkpoint_backbone, load_resnet, stage_channels
from medvill.localized.heads import (
    VARIANTS,
    FPNSegmenter,
    detector,
    freeze_trunk,
    segmentation_loss,
    set_training,
)
from medvill.localized.scores import (
    ImageBoxes,
    detection_compute,
    dice_per_image,
    segmentation_compute,
)
from medvill.localized.targets import LocalizedSample, class_names, input_batch, label_ids
from medvill.tasks.common import task_device

log = logging.getLogger(__name__)

LOCALIZED_TASKS: tuple[str, ...] = ("detection", "segmentation")
#: The headline metric of each task.
TASK_METRIC = {"detection": "map", "segmentation": "dice"}


@dataclass(frozen=True)
class LocalizedSettings:
    """One profile of ``localized_eval.profiles``."""

    image_size: int = 224
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-6
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    inits: tuple[str, ...] = INITS
    variants: tuple[str, ...] = VARIANTS
    fpn_channels: int = 256
    proposals: int = 1000  # region proposals per image (detection)
    iou_thresholds: tuple[float, ...] = (0.5,)
    max_detections: int = 100
    mask_threshold: float = 0.5
    findings: tuple[str, ...] = ()  # empty: every finding
    eval_batch_size: int = 16

    @classmethod
    def from_dict(cls, block: dict[str, Any]) -> LocalizedSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"localized_eval profile: unknown keys {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        problems = []
        if self.image_size < 32 or self.image_size % 32:
            problems.append(f"image_size must be a multiple of 32 ≥ 32, got {self.image_size}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            problems.append(f"fractions must lie in (0, 1], got {list(self.fractions)}")
        if not self.seeds:
            problems.append("seeds must list at least one seed")
        problems += [f"unknown init {i!r} (one of {INITS})" for i in self.inits if i not in INITS]
        problems += [
            f"unknown variant {v!r} (one of {VARIANTS})" for v in self.variants if v not in VARIANTS
        ]
        if self.steps < 1 or self.batch_size < 1:
            problems.append("steps and batch_size must be ≥ 1")
        if problems:
            raise ValueError("localized_eval profile: " + "; ".join(problems))


def fraction_subset(n_images: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``ceil(fraction × n)`` training images (≥ 1), drawn by ``seed``."""
    count = max(1, min(n_images, math.ceil(fraction * n_images - 1e-9)))
    rng = np.random.default_rng([seed, 7919])
    return np.sort(rng.permutation(n_images)[:count])


def batches(indices: np.ndarray, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches cycling through seeded permutations of ``indices``."""
    rng = np.random.default_rng([seed, 104729])
    size = min(batch_size, len(indices))
    out: list[np.ndarray] = []
    order = np.zeros(0, dtype=np.int64)
    while len(out) < steps:
        if len(order) < size:
            order = np.concatenate([order, rng.permutation(indices)])
        out.append(order[:size])
        order = order[size:]
    return out


# --------------------------------------------------------------------------- one run


def _detection_targets(
    samples: list[LocalizedSample], classes: list[str], device: torch.device
) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.as_tensor(s.boxes, dtype=torch.float32).reshape(-1, 4).to(device),
            "labels": torch.as_tensor(label_ids(s.findings, classes), dtype=torch.int64).to(device),
        }
        for s in samples
    ]


def train_detection(
    resnet: torch.nn.Module,
    backbone: str,
    train: list[LocalizedSample],
    subset: np.ndarray,
    classes: list[str],
    variant: str,
    settings: LocalizedSettings,
    seed: int,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, trunk = detector(
        resnet, stage_channels(backbone), len(classes), settings.image_size,
        settings.fpn_channels, settings.proposals,
    )  # fmt: skip
    device = task_device()

    def loss_of(chosen: list[LocalizedSample]) -> torch.Tensor:
        losses = model(
            list(input_batch(chosen, device)), _detection_targets(chosen, classes, device)
        )
        return sum(losses.values())

    return _fit(model, trunk, variant, train, subset, settings, seed, loss_of, "detection")


def _fit(
    model: torch.nn.Module,
    trunk: torch.nn.Module,
    variant: str,
    train: list[LocalizedSample],
    subset: np.ndarray,
    settings: LocalizedSettings,
    seed: int,
    loss_of: Callable[[list[LocalizedSample]], torch.Tensor],
    task: str,
) -> torch.nn.Module:
    """AdamW over the trainable parameters for ``settings.steps`` batches of ``subset``; the
    trunk stays frozen (and in eval mode) for the ``frozen`` variant. Shared by both tasks."""
    freeze_trunk(trunk, variant)
    model.to(task_device())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    for step, batch in enumerate(batches(subset, settings.batch_size, settings.steps, seed)):
        set_training(model, trunk, variant)
        loss = loss_of([train[i] for i in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 0 or (step + 1) % 50 == 0:
            log.debug("%s step %d loss %.4f", task, step + 1, float(loss.detach()))
    return model


@torch.no_grad()
def predict_detection(
    model: torch.nn.Module,
    test: list[LocalizedSample],
    classes: list[str],
    batch_size: int,
) -> list[ImageBoxes]:
    model.eval()
    device = next(model.parameters()).device
    out: list[ImageBoxes] = []
    for start in range(0, len(test), batch_size):
        chunk = test[start : start + batch_size]
        predictions = model(list(input_batch(chunk, device)))
        for sample, pred in zip(chunk, predictions, strict=True):
            pred = {k: v.cpu() for k, v in pred.items()}
            out.append(
                ImageBoxes(
                    gt_boxes=sample.boxes.reshape(-1, 4),
                    gt_labels=label_ids(sample.findings, classes),
                    boxes=pred["boxes"].numpy().astype(np.float64),
                    scores=pred["scores"].numpy().astype(np.float64),
                    labels=pred["labels"].numpy(),
                )
            )
    return out


def train_segmentation(
    resnet: torch.nn.Module,
    backbone: str,
    train: list[LocalizedSample],
    subset: np.ndarray,
    variant: str,
    settings: LocalizedSettings,
    seed: int,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FPNSegmenter(resnet, stage_channels(backbone), settings.fpn_channels)
    device = task_device()

    def loss_of(chosen: list[LocalizedSample]) -> torch.Tensor:
        target = torch.from_numpy(np.stack([s.mask for s in chosen])).to(device)
        return segmentation_loss(model(input_batch(chosen, device)), target)

    return _fit(model, model.body, variant, train, subset, settings, seed, loss_of, "segmentation")


@torch.no_grad()
def predict_segmentation(
    model: torch.nn.Module, test: list[LocalizedSample], settings: LocalizedSettings
) -> list[float]:
    """Per-image Dice of the thresholded prediction."""
    model.eval()
    dice: list[float] = []
    for start in range(0, len(test), settings.eval_batch_size):
        chunk = test[start : start + settings.eval_batch_size]
        device = next(model.parameters()).device
        probs = model(input_batch(chunk, device)).sigmoid().cpu().numpy()
        for sample, prob in zip(chunk, probs, strict=True):
            dice.append(dice_per_image(prob >= settings.mask_threshold, sample.mask))
    return dice


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class EvalPlan:
    """What is evaluated: the task, the data, the checkpoint and the bootstrap."""

    task: str
    train: list[LocalizedSample]
    test: list[LocalizedSample]
    checkpoint: Path | None
    backbone: str | None = None
    bootstrap: int = 30
    ci_resamples: int = 1000
    bootstrap_seed: int = 123
    confidence: float = 0.95


def _seed_mean(computes: list[M.Compute], metric: str) -> M.Compute:
    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {metric: np.mean([c(weights)[metric] for c in computes], axis=0)}

    return compute


def run_grid(plan: EvalPlan, settings: LocalizedSettings) -> dict[str, Any]:
    """Every (init, variant, fraction) cell over the seeds; the ``runs`` and ``skipped`` parts
    of the results document."""
    if plan.task not in LOCALIZED_TASKS:
        raise ValueError(f"task must be one of {LOCALIZED_TASKS}, got {plan.task!r}")
    if not plan.train or not plan.test:
        raise ValueError("localized evaluation needs training and test images")
    metric = TASK_METRIC[plan.task]
    backbone = plan.backbone or (
        checkpoint_backbone(plan.checkpoint) if plan.checkpoint else "resnet50"
    )
    classes = class_names(plan.train)
    if plan.task == "detection" and not classes:
        raise ValueError("the training split has no box: nothing to train a detector on")
    if plan.task == "segmentation" and not any(s.has_mask for s in plan.train):
        raise ValueError(
            "the training split has no mask (only boxes or nothing): segmentation needs masks "
            "(SIIM-ACR, the synthetic corpus)"
        )
    runs: list[dict[str, Any]] = []
    cells: dict[tuple[str, str, float], M.Compute] = {}
    skipped: dict[str, str] = {}
    origins: dict[str, str] = {}
    for init in settings.inits:
        probe, origin = load_resnet(init, backbone, 0, plan.checkpoint)
        if probe is None:
            log.warning("localized %s: skipping the %s arm: %s", plan.task, init, origin)
            skipped[init] = origin
            continue
        origins[init] = origin
        for variant in settings.variants:
            for fraction in settings.fractions:
                row, cells[init, variant, fraction] = _cell(
                    plan, settings, backbone, classes, init, variant, fraction, metric
                )
                runs.append(row)
    return {"runs": runs, "comparisons": compare_to_checkpoint(plan, cells, runs, metric),
            "skipped": skipped, "inits": origins, "classes": classes, "backbone": backbone,
            "metric": metric}  # fmt: skip


def compare_to_checkpoint(
    plan: EvalPlan,
    cells: dict[tuple[str, str, float], M.Compute],
    runs: list[dict[str, Any]],
    metric: str,
) -> list[dict[str, Any]]:
    """The checkpoint's arm against every other arm of the same variant and fraction, paired.

    Why paired: every arm is scored on the same test images, so each bootstrap resample can
    score both and take the difference (:func:`medvill.metrics.paired_bootstrap`). Two
    per-arm intervals that overlap say little — the test images that are hard for one arm are
    hard for the other, and the difference's interval is much narrower than either. Each row:
    the baseline, variant, fraction, both values, ``difference`` = checkpoint − baseline, its
    interval, the bootstrap p-value, the paper's t-tests over the resample values and
    ``seeds_better``, in how many seeds the checkpoint's head scored higher (the bootstrap
    covers the test images, not the seeds).
    """
    per_seed = {(r["init"], r["variant"], r["fraction"]): r["per_seed"] for r in runs}
    rows: list[dict[str, Any]] = []
    for (init, variant, fraction), baseline in cells.items():
        checkpoint = cells.get(("pretrained", variant, fraction))
        if init == "pretrained" or checkpoint is None:
            continue
        stats = M.paired_bootstrap(
            baseline, checkpoint, len(plan.test), plan.bootstrap, plan.bootstrap_seed,
            plan.confidence, plan.ci_resamples,
        )[metric]  # fmt: skip
        value_baseline, value_checkpoint = stats.pop("a"), stats.pop("b")
        mine, theirs = per_seed["pretrained", variant, fraction], per_seed[init, variant, fraction]
        better = sum(a > b for a, b in zip(mine, theirs, strict=True))
        rows.append({"baseline": init, "variant": variant, "fraction": fraction,
                     "pretrained_value": value_checkpoint, "baseline_value": value_baseline,
                     **stats, "seeds_better": better, "seeds": len(mine)})  # fmt: skip
    return rows


def _cell(
    plan: EvalPlan,
    settings: LocalizedSettings,
    backbone: str,
    classes: list[str],
    init: str,
    variant: str,
    fraction: float,
    metric: str,
) -> tuple[dict[str, Any], M.Compute]:
    """One cell's results row, and the bootstrap Compute of its seed-mean metric (for the
    paired comparison between arms)."""
    computes: list[M.Compute] = []
    per_seed: list[float] = []
    started = time.perf_counter()
    count = 0
    for seed in settings.seeds:
        with torch.random.fork_rng(devices=[]):  # seeds the run without leaking global state
            compute = _seed_run(plan, settings, backbone, classes, init, variant, fraction, seed)
        count = len(fraction_subset(len(plan.train), fraction, seed))
        computes.append(compute)
        per_seed.append(float(compute(np.ones((1, len(plan.test))))[metric][0]))
        log.info(
            "localized %s %s/%s %g%% seed %d: %s %.4f",
            plan.task, init, variant, fraction * 100, seed, metric, per_seed[-1],
        )  # fmt: skip
    seed_mean = _seed_mean(computes, metric)
    stats = M.bootstrap(
        seed_mean, len(plan.test), plan.bootstrap, plan.bootstrap_seed, plan.confidence,
        plan.ci_resamples,
    )[metric]  # fmt: skip
    row = {
        "init": init,
        "variant": variant,
        "fraction": fraction,
        "train_images": count,
        "seeds": list(settings.seeds),
        "per_seed": per_seed,
        "seed_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        **stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return row, seed_mean


def _seed_run(
    plan: EvalPlan,
    settings: LocalizedSettings,
    backbone: str,
    classes: list[str],
    init: str,
    variant: str,
    fraction: float,
    seed: int,
) -> M.Compute:
    """Train one head with one seed and return the bootstrap Compute of its test metric."""
    resnet, _ = load_resnet(init, backbone, seed, plan.checkpoint)
    assert resnet is not None
    subset = fraction_subset(len(plan.train), fraction, seed)
    if plan.task == "detection":
        model = train_detection(
            resnet, backbone, plan.train, subset, classes, variant, settings, seed
        )
        images = predict_detection(model, plan.test, classes, settings.eval_batch_size)
        return detection_compute(images, settings.iou_thresholds, settings.max_detections)
    model = train_segmentation(resnet, backbone, plan.train, subset, variant, settings, seed)
    return segmentation_compute(predict_segmentation(model, plan.test, settings))
