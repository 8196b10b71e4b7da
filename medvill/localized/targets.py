"""Shard samples → the inputs and targets of the localized tasks.

The shards of a dataset with annotations carry, in each sample's ``json``, the ``regions`` the
localized stage placed on the stored (``output_size``²) image: ``finding``, ``box``
``[x_min, y_min, x_max, y_max]`` in continuous output pixels and ``mask`` (row-major run
lengths, ``""`` for a box; docs/formats.md §13). The model sees the image resized to
``image_size``², so boxes are scaled by ``image_size / stored side`` and masks are resized with
the area filter and kept where they cover at least half a pixel — the localized stage's own
rule, so a mask and its image stay aligned. Detection reads every region's box (one class per
finding); segmentation reads the union of the image's masks. Images without regions are
negatives and stay in both tasks.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from medvill.data import IMAGE_MEMBERS, SAMPLE_MEMBERS, decode_grey, log_and_continue, read_index
from medvill.imagebatch import IMAGENET_MEAN, IMAGENET_STD
from medvill.shardreader import MemberReader, sample_refs
from pipeline.localized.rle import decode_counts

log = logging.getLogger(__name__)


class NoRegionsError(ValueError):
    """The dataset's shards carry no localized annotations (no ``regions`` in their json)."""


@dataclass(frozen=True)
class LocalizedSample:
    """One image at the model's input size and its targets on that grid."""

    key: str
    image: torch.Tensor  # (1, S, S) float16 grey in [0, 1]; input_batch normalises
    boxes: np.ndarray  # (N, 4) float, input pixels
    findings: tuple[str, ...]  # (N,) each box's finding
    mask: np.ndarray  # (S, S) bool, the union of the image's masks
    has_mask: bool  # at least one region of the image is a mask


def grey_input(data: bytes, size: int) -> torch.Tensor:
    """Image bytes → (1, size, size) float16 grey in [0, 1]: the loader's resize
    (:func:`medvill.data.decode_image`: /255, antialiased bilinear) without its channel
    replication and normalisation, kept in half precision — 2 bytes a pixel, 100 kB at 224², so
    all 26,684 RSNA training images (100 %) take 2.7 GB instead of 16 GB as float32 RGB."""
    grey = torch.from_numpy(decode_grey(data, size))[None].float().div_(255.0)
    if tuple(grey.shape[-2:]) != (size, size):
        grey = TF.resize(grey, [size, size], antialias=True)
    return grey.to(torch.float16)


def input_batch(samples: list[LocalizedSample], device: torch.device) -> torch.Tensor:
    """(B, 3, S, S) ImageNet-normalised model input of ``samples`` on ``device``."""
    grey = torch.stack([s.image for s in samples]).to(device).float()
    mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
    return (grey.expand(-1, 3, -1, -1) - mean) / std


def scale_box(box: list[float], stored: tuple[int, int], size: int) -> np.ndarray:
    """A box on the stored (width, height) image → the same box on the size² input."""
    width, height = stored
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    return np.array(
        [x_min * size / width, y_min * size / height, x_max * size / width, y_max * size / height]
    )


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A boolean (H, W) mask → (size, size): on where the mask covers ≥ half the pixel."""
    if mask.shape == (size, size):
        return mask.astype(bool)
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    area = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")
    return (area[0, 0] >= 0.5).numpy()


def sample_targets(
    meta: dict[str, Any],
    stored: tuple[int, int],
    size: int,
    only: frozenset[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, bool]:
    """(boxes, findings, union mask, has_mask) of one sample's ``regions`` at the input size;
    with ``only``, just the regions of those findings (e.g. Pneumothorax, as SIIM-ACR)."""
    width, height = stored
    boxes: list[np.ndarray] = []
    findings: list[str] = []
    union = np.zeros((height, width), dtype=bool)
    has_mask = False
    for region in meta.get("regions") or []:
        if only is not None and str(region["finding"]) not in only:
            continue
        box = scale_box(region["box"], stored, size)
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append(box)
            findings.append(str(region["finding"]))
        if region.get("mask"):
            union |= decode_counts(str(region["mask"]), width, height)
            has_mask = True
    return (
        np.stack(boxes) if boxes else np.zeros((0, 4)),
        tuple(findings),
        resize_mask(union, size),
        has_mask,
    )


def has_regions(index: Path) -> bool:
    """Whether the dataset's shards carry localized annotations (the first sample's json has
    ``regions``: the shards stage writes the key for every sample or for none)."""
    for split in ("train", "test", "valid"):
        try:
            shards = read_index(index, split)
        except KeyError:
            continue
        with MemberReader(("json",)) as reader:
            for ref in sample_refs(list(shards.files), log_and_continue, shards.contents()):
                sample = reader.read(ref)
                return "regions" in json.loads(sample.get("json", b"{}"))
    return False


def read_split(
    index: Path, split: str, size: int, only: frozenset[str] | None = None
) -> list[LocalizedSample]:
    """Every sample of one split in shard order, at ``size``², with its targets (just the
    regions of the findings in ``only`` when given)."""
    index = Path(index)
    if not index.is_file():
        raise FileNotFoundError(f"{index} missing: run the pipeline (`medvill-prep all`) first")
    shards = read_index(index, split)
    samples: list[LocalizedSample] = []
    with MemberReader(SAMPLE_MEMBERS) as reader:
        for ref in sample_refs(list(shards.files), log_and_continue, shards.contents()):
            sample = reader.read(ref)
            member = next((m for m in IMAGE_MEMBERS if m in sample), None)
            if member is None or "json" not in sample:
                raise ValueError(f"{ref.url}: sample {ref.key} lacks an image or json member")
            meta = json.loads(sample["json"])
            if "regions" not in meta:
                raise NoRegionsError(
                    f"{index}: sample {ref.key} has no `regions` in its json: "
                    "the dataset has no localized annotations"
                )
            with Image.open(io.BytesIO(sample[member])) as img:
                stored = img.size
            boxes, findings, mask, has_mask = sample_targets(meta, stored, size, only)
            samples.append(
                LocalizedSample(
                    key=ref.key, image=grey_input(sample[member], size), boxes=boxes,
                    findings=findings, mask=mask, has_mask=has_mask,
                )
            )  # fmt: skip
    return samples


def require_regions(index: Path, dataset: str) -> None:
    """Stop with a clear message when a dataset cannot be evaluated on localized tasks."""
    if not Path(index).is_file():
        raise FileNotFoundError(f"{index} missing: run `medvill-prep all --dataset {dataset}`")
    if not has_regions(index):
        raise NoRegionsError(
            f"dataset {dataset!r} has no localized annotations (its shard json has no "
            "`regions`): localized evaluation needs boxes or masks — a localized dataset "
            "(adapters rsna_pneumonia, siim_pneumothorax, nih_boxes, object_cxr) or the "
            "synthetic corpus"
        )


def class_names(samples: list[LocalizedSample]) -> list[str]:
    """The detection classes: every finding with a box in the training samples, sorted."""
    return sorted({f for s in samples for f in s.findings})


def label_ids(findings: tuple[str, ...], classes: list[str]) -> np.ndarray:
    """1-based class ids (0 is the detector's background); a finding the training split never
    showed gets an id past the known ones, so its boxes count as missed, never dropped."""
    ids = {name: i + 1 for i, name in enumerate(classes)}
    unknown = len(classes) + 1
    return np.array([ids.get(f, unknown) for f in findings], dtype=np.int64)
